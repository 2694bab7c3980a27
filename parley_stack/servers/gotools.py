"""Command-line tools built from their Go modules: ghz (load) and grpcurl (reflection)."""

from __future__ import annotations

from pathlib import Path

from parley_stack.progress import Progress
from parley_stack.servers.base import ProcessSpec, Server
from parley_stack.servers.gobuild import go_install


class GoTool(Server):
    """A command-line tool: built into the cache, never started."""

    module: str
    command: str
    version: str

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
        )

    def processes(self) -> list[ProcessSpec]:
        return []


class GhzTool(GoTool):
    """ghz, the gRPC load generator the benchmarks drive."""

    name = "ghz"
    module = "github.com/bojand/ghz"
    command = "cmd/ghz"
    version = "v0.120.0"


class GrpcurlTool(GoTool):
    """grpcurl, to list and call a running service's methods by reflection."""

    name = "grpcurl"
    module = "github.com/fullstorydev/grpcurl"
    command = "cmd/grpcurl"
    version = "v1.9.3"

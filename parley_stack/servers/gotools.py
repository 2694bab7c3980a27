"""Command-line tools built from their Go modules: ghz (load) and grpcurl (reflection)."""

from __future__ import annotations

from parley_stack.servers.base import ProcessSpec
from parley_stack.servers.gobuild import GoBuilt


class GoTool(GoBuilt):
    """A command-line tool: built into the cache, never started."""

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

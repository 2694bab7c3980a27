"""The local stack as pytest sees it: start what a test needs once, stop it at the end.

By default tests run a stack of their own (ports shifted by `PARLEY_TEST_PORT_OFFSET`,
1000 unless set), beside a developer's `make up`. With `PARLEY_TEST_REUSE_STACK=1` they
use the running default stack instead and leave it running.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from parley_stack.config import StackConfig
from parley_stack.stack import Stack


def stack_config_for_tests() -> StackConfig:
    if os.environ.get("PARLEY_TEST_REUSE_STACK") == "1":
        return StackConfig()
    return StackConfig(port_offset=int(os.environ.get("PARLEY_TEST_PORT_OFFSET", "1000")))


class LocalStack:
    """A session-wide handle: `ensure` servers, read their endpoints, stop at the end."""

    def __init__(self, config: StackConfig, *, reuse: bool) -> None:
        self.config = config
        self.reuse = reuse
        self.stack = Stack(config)
        self._started: set[str] = set()

    def ensure(self, *names: str) -> None:
        """Install and start names (and what they need) unless they already run."""
        started = self.stack.up(names)
        self._started.update(started)

    def endpoint(self, process: str, protocol: str) -> tuple[str, int]:
        """(host, port) of one process's endpoint, for example ("redis", "redis")."""
        running = self.stack.table.running(process)
        if running is None:
            raise LookupError(f"{process} is not running")
        host, port = running.endpoints[protocol].rsplit(":", 1)
        return host, int(port)

    def stop(self, names: Iterable[str]) -> None:
        self.stack.down(list(names))

    def close(self) -> None:
        if not self.reuse:
            self.stack.down()

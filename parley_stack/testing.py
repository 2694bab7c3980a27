"""The local stack as pytest sees it: start what a test needs once, stop it at the end.

By default tests run a stack of their own (ports shifted by `PARLEY_TEST_PORT_OFFSET`,
1000 unless set), beside a developer's `make up`. With `PARLEY_TEST_REUSE_STACK=1` they
use the running default stack instead and leave it running.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from parley_stack.config import PORT_WINDOW, StackConfig
from parley_stack.stack import Stack


def test_port_offset() -> int:
    """The port offset of the test session's stack."""
    return int(os.environ.get("PARLEY_TEST_PORT_OFFSET", "1000"))


def side_stack_offset(slot: int) -> int:
    """An offset for a test's own extra stack (a Cassandra ring, Apache Pulsar), slot >= 1.

    It sits beside the session's stack, one window of ports per slot, so parallel test
    runs at different PARLEY_TEST_PORT_OFFSETs never collide.
    """
    return test_port_offset() + PORT_WINDOW * slot


def stack_config_for_tests() -> StackConfig:
    if os.environ.get("PARLEY_TEST_REUSE_STACK") == "1":
        return StackConfig()
    return StackConfig(port_offset=test_port_offset())


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

"""What every server of the local stack provides.

A `Server` knows how to install itself (into the shared cache), which processes it runs
and how to tell that each one is really ready. Starting, stopping and the pid files are
the stack's business (`parley_stack.process`), not the server's.
"""

from __future__ import annotations

import abc
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from parley_stack.config import StackConfig
from parley_stack.progress import Progress


@dataclass(frozen=True)
class ProcessSpec:
    """One operating-system process of a server."""

    name: str  # unique in the stack: "redis", "cassandra-2", ...
    argv: Sequence[str]
    ready: Callable[[], bool]  # one cheap probe of the real readiness signal
    env: Mapping[str, str] = field(default_factory=dict)  # added to a minimal environment
    cwd: Path | None = None
    endpoints: Mapping[str, str] = field(default_factory=dict)  # protocol -> host:port
    ready_timeout_s: float = 120.0
    stop_timeout_s: float = 30.0


class Server(abc.ABC):
    """A real server (or one of Parley's services) that the stack runs."""

    name: str
    #: Servers that must be ready before this one starts.
    requires: tuple[str, ...] = ()

    def __init__(self, config: StackConfig) -> None:
        self.config = config

    @property
    def cache(self) -> Path:
        path = self.config.cache_dir / self.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @abc.abstractmethod
    def is_installed(self) -> bool:
        """True when `install` has nothing left to do."""

    @abc.abstractmethod
    def install(self, progress: Progress) -> None:
        """Download or build what is missing into the cache; idempotent."""

    @abc.abstractmethod
    def processes(self) -> list[ProcessSpec]:
        """The processes to start, in order; each is waited for before the next."""

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Write config files and data folders just before the first process starts."""

    def after_ready(self) -> None:  # noqa: B027 - optional hook
        """Run once every process is ready (create topics, schemas, ...)."""


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when GET url answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False

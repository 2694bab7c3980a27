"""The local stack: install, start in dependency order, wait for readiness, stop, report."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from parley_stack.config import StackConfig
from parley_stack.process import ProcessTable
from parley_stack.progress import Progress
from parley_stack.servers import CATALOG, DEFAULT_UP, EXTRAS, TOOLS, load
from parley_stack.servers.base import ProcessSpec, Server


class StackError(RuntimeError):
    """A server could not be installed or did not become ready."""


@dataclass(frozen=True)
class ProcessStatus:
    server: str
    name: str
    state: str  # running / stopped / failed
    pid: int | None
    endpoints: dict[str, str]

    def as_json(self) -> dict[str, object]:
        return {
            "server": self.server,
            "name": self.name,
            "state": self.state,
            "pid": self.pid,
            "endpoints": self.endpoints,
        }


def _closure(names: Iterable[str], config: StackConfig) -> list[str]:
    """names plus everything they require, in catalog (start) order."""
    wanted: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in wanted:
            continue
        wanted.add(name)
        stack.extend(load(name, config).requires)
    return [n for n in [*CATALOG, *TOOLS] if n in wanted]


class Stack:
    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self.table = ProcessTable(self.config)
        self._failed_path = self.config.run_dir / "failed"

    def install(self, only: Iterable[str] | None = None, progress: Progress | None = None) -> list[str]:
        """Download and build what the named servers and tools need, without starting them."""
        names = _closure(only or [*CATALOG, *TOOLS], self.config)
        with progress or Progress() as bar:
            for name in names:
                server = load(name, self.config)
                if not server.is_installed():
                    started = time.monotonic()
                    server.install(bar)
                    bar.log(f"installed {server.name} in {time.monotonic() - started:.1f}s")
        return names

    def up(
        self,
        only: Iterable[str] | None = None,
        progress: Progress | None = None,
        *,
        extras: Iterable[str] = (),
    ) -> list[str]:
        """Install and start the named servers (default: all but the extras) and what they
        need, plus the servers of each named extra (EXTRAS: "tracing"); idempotent.

        A process that runs with another trace export than the stack now gives it (Jaeger
        was started or stopped since) is restarted.
        """
        wanted = [*(only or [*DEFAULT_UP, *TOOLS])]
        for extra in extras:
            if extra not in EXTRAS:
                raise StackError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
            wanted.extend(EXTRAS[extra])
        names = _closure(wanted, self.config)
        own_progress = progress is None
        bar = progress or Progress()
        if own_progress:
            bar.__enter__()
        try:
            servers = [load(n, self.config) for n in names]
            for server in servers:
                if not server.is_installed():
                    started = time.monotonic()
                    server.install(bar)
                    bar.log(f"installed {server.name} in {time.monotonic() - started:.1f}s")
            for server in servers:
                if server.name in TOOLS:
                    continue
                self._start(server, bar)
        finally:
            if own_progress:
                bar.__exit__(None, None, None)
        return names

    def _start(self, server: Server, bar: Progress) -> None:
        specs = server.processes()
        stale = [s.name for s in specs if self._exports_elsewhere(s)]
        if not stale and all(self.table.running(s.name) for s in specs) and all(s.ready() for s in specs):
            return
        for name in stale:
            bar.log(f"restarting {name}: its trace export changed")
            self.table.stop(name)
        started = time.monotonic()
        server.prepare()
        for spec in specs:
            if self.table.running(spec.name) is None:
                self._mark_failed(spec.name, False)
                self.table.start(spec, server.name)
            self._wait_ready(spec)
        server.after_ready()
        bar.log(f"{server.name} ready in {time.monotonic() - started:.1f}s")

    def _exports_elsewhere(self, spec: ProcessSpec) -> bool:
        """True when spec's process runs, sending its spans somewhere other than spec says
        (its "otlp" endpoint: where its spans go, absent when it exports none)."""
        running = self.table.running(spec.name)
        return running is not None and running.endpoints.get("otlp") != spec.endpoints.get("otlp")

    def _wait_ready(self, spec: ProcessSpec) -> None:
        deadline = time.monotonic() + spec.ready_timeout_s
        while time.monotonic() < deadline:
            if self.table.running(spec.name) is None:
                self._mark_failed(spec.name, True)
                raise StackError(
                    f"{spec.name} exited before it was ready; see {self.config.log_path(spec.name)}"
                )
            if spec.ready():
                return
            time.sleep(0.25)
        self._mark_failed(spec.name, True)
        self.table.stop(spec.name, spec.stop_timeout_s)
        raise StackError(
            f"{spec.name} was not ready after {spec.ready_timeout_s:.0f}s; "
            f"see {self.config.log_path(spec.name)}"
        )

    def _mark_failed(self, name: str, failed: bool) -> None:
        self._failed_path.mkdir(parents=True, exist_ok=True)
        marker = self._failed_path / name
        if failed:
            marker.touch()
        else:
            marker.unlink(missing_ok=True)

    def down(self, only: Iterable[str] | None = None) -> list[str]:
        """Stop the named servers (default: everything this stack runs), in reverse start order.

        Works from the pid table alone, so it also stops processes that the current
        configuration would not start (a three-node ring's extra nodes, say).
        """
        wanted = set(only) if only else None
        order = {name: index for index, name in enumerate(CATALOG)}
        running = [r for r in self.table.all_running() if wanted is None or r.server in wanted]
        running.sort(key=lambda r: (order.get(r.server, len(order)), r.name), reverse=True)
        stopped: list[str] = []
        for process in running:
            if self.table.stop(process.name):
                stopped.append(process.name)
        return stopped

    def status(self) -> list[ProcessStatus]:
        rows: list[ProcessStatus] = []
        for name in CATALOG:
            for spec in load(name, self.config).processes():
                running = self.table.running(spec.name)
                if running is not None:
                    state, pid, endpoints = "running", running.pid, running.endpoints
                else:
                    failed = (self._failed_path / spec.name).exists()
                    state, pid, endpoints = ("failed" if failed else "stopped"), None, dict(spec.endpoints)
                rows.append(ProcessStatus(name, spec.name, state, pid, endpoints))
        # Processes this configuration does not name (a three-node ring's extra nodes).
        listed = {row.name for row in rows}
        for running in self.table.all_running():
            if running.name not in listed:
                rows.append(
                    ProcessStatus(running.server, running.name, "running", running.pid, running.endpoints)
                )
        return rows

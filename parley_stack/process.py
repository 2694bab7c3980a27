"""Starting and stopping the stack's processes: pid files, logs, TERM-wait-KILL.

Each process runs in its own session (process group), so stopping it also stops whatever
it forked. A pid file records the pid and the process start time, so a stale file left by
a crash (and a pid reused by the kernel since) is never mistaken for a running server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from parley_stack.config import StackConfig
from parley_stack.servers.base import ProcessSpec

#: Variables a server may inherit; everything else (proxies, the developer's Python
#: environment) is left out so that a server behaves the same on every machine.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "JAVA_HOME", "TMPDIR", "USER")

#: Children started by this Python process, kept so they are reaped (not warned about)
#: when a test session starts and stops a stack in-process.
_children: dict[int, subprocess.Popen[bytes]] = {}

#: How long a process group may take to vanish after SIGKILL before stop gives up loudly
#: (a process stuck in uninterruptible I/O), instead of waiting forever.
KILL_WAIT_S = 30.0


@dataclass(frozen=True)
class Running:
    name: str
    server: str
    pid: int
    started: float
    endpoints: dict[str, str]


def _proc_start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name in field 2 may contain spaces, so split after ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def _alive(pid: int, ticks: int | None) -> bool:
    current = _proc_start_ticks(pid)
    if current is None:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    if state == "Z":
        return False
    return ticks is None or current == ticks


class ProcessTable:
    """The pid files of one stack (one run folder)."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.dir = config.run_dir / "pids"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _pidfile(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def running(self, name: str) -> Running | None:
        """The live process called name, or None (a stale pid file is removed)."""
        path = self._pidfile(name)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not _alive(record["pid"], record.get("ticks")):
            path.unlink(missing_ok=True)
            return None
        return Running(
            name, record.get("server", name), record["pid"], record["started"], record["endpoints"]
        )

    def all_running(self) -> list[Running]:
        found = (self.running(p.stem) for p in sorted(self.dir.glob("*.json")))
        return [r for r in found if r is not None]

    def start(self, spec: ProcessSpec, server: str) -> Running:
        env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
        env.update(spec.env)
        log_path = self.config.log_path(spec.name)
        with log_path.open("ab") as log, open(os.devnull, "rb") as devnull:
            log.write(f"\n--- starting {spec.name} at {time.ctime()}: {' '.join(spec.argv)}\n".encode())
            log.flush()
            child = subprocess.Popen(
                list(spec.argv),
                cwd=spec.cwd,
                env=env,
                stdin=devnull,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _children[child.pid] = child
        record = {
            "pid": child.pid,
            "server": server,
            "stop_timeout_s": spec.stop_timeout_s,
            "ticks": _proc_start_ticks(child.pid),
            "started": time.time(),
            "endpoints": dict(spec.endpoints),
            "argv": list(spec.argv),
        }
        self._pidfile(spec.name).write_text(json.dumps(record))
        return Running(spec.name, server, child.pid, time.time(), dict(spec.endpoints))

    def stop(self, name: str, timeout_s: float | None = None) -> bool:
        """TERM the process group, wait (the spec's stop timeout), then KILL it.

        True if one was running.
        """
        running = self.running(name)
        if running is None:
            return False
        if timeout_s is None:
            try:
                timeout_s = float(json.loads(self._pidfile(name).read_text())["stop_timeout_s"])
            except (OSError, ValueError, KeyError):
                timeout_s = 30.0
        pgid = running.pid  # start_new_session makes the child its group's leader
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _group_alive(pgid):
                break
            _reap(running.pid)
            time.sleep(0.1)
        else:
            _signal_group(pgid, signal.SIGKILL)
            killed_by = time.monotonic() + KILL_WAIT_S
            while _group_alive(pgid):
                _reap(running.pid)
                if time.monotonic() > killed_by:
                    raise RuntimeError(
                        f"{name} (process group {pgid}) outlived SIGKILL by {KILL_WAIT_S:.0f} s;"
                        f" its pid file stays: {self._pidfile(name)}"
                    )
                time.sleep(0.05)
        _reap(running.pid)
        self._pidfile(name).unlink(missing_ok=True)
        return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our own child (tests start stacks in-process)."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]

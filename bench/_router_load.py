"""The router bench's load and what it measures: streams of turns on a path, the TTFTs,
gaps and tokens inside a measuring window, and each process's CPU and memory from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._measure import cpu_delta, cpu_s, percentile
from bench._router_paths import Script, Target, router_view, target_metrics
from bench.scripted_openai import backend_reset, backend_stats

#: Which straight path each proxy is compared with.
BASELINE = {"parley-triton": "triton", "parley-openai": "openai", "litellm": "openai"}
ITL_BUDGET_MS = 5.0


# Statistics ---------------------------------------------------------------------------


@dataclass
class Window:
    """What happened between start and end (perf_counter seconds) on one target."""

    start: float
    end: float
    ttfts: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    tokens: int = 0
    turns: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def inside(self, at: float) -> bool:
        return self.start <= at < self.end

    def merge(self, other: Window) -> None:
        self.ttfts += other.ttfts
        self.gaps += other.gaps
        self.tokens += other.tokens
        self.turns += other.turns
        self.errors.update(other.errors)

    def summary(self, seconds: float) -> dict[str, Any]:
        ms = 1000.0
        return {
            "turns": self.turns,
            "ttft_samples": len(self.ttfts),
            "ttft_p50_ms": percentile(self.ttfts, 0.50) * ms,
            "ttft_p99_ms": percentile(self.ttfts, 0.99) * ms,
            "itl_p50_ms": percentile(self.gaps, 0.50) * ms,
            "itl_p99_ms": percentile(self.gaps, 0.99) * ms,
            "tokens_per_s": self.tokens / seconds if seconds > 0 else math.nan,
            "errors": dict(self.errors.most_common(5)),
        }


def added(proxy: dict[str, Any], straight: dict[str, Any], key: str) -> float:
    return float(proxy[key]) - float(straight[key])


# Processes (/proc) ----------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _parents() -> dict[int, int]:
    found: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(entry.path, "stat").read_text()
                found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def _tree(pid: int, parents: dict[int, int]) -> list[int]:
    family, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        family += frontier
    return family


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except OSError:
        return 0


class Processes:
    """The processes whose CPU and memory the bench reports, by name."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}

    def add(self, name: str, pid: int) -> None:
        self.pids[name] = pid

    def cpu(self) -> dict[str, float]:
        parents = _parents()
        found = {"client": cpu_s(os.getpid())}  # this process alone: its children are servers
        for name, pid in self.pids.items():
            found[name] = sum(cpu_s(p) for p in _tree(pid, parents))
        return found

    def rss(self, name: str) -> int:
        parents = _parents()
        return sum(_rss(p) for p in _tree(self.pids[name], parents))


# Driving load -----------------------------------------------------------------------------


async def drive(
    target: Target, streams: int, script: Script, measure_s: float, procs: Processes, *, steady: bool = False
) -> dict[str, Any]:
    """`streams` workers run turns back to back; what falls inside the window is recorded.

    The window opens once the streams have started (spread over one turn, at most 2 s);
    `steady` opens it only once every stream has had its first token (long turns: the
    window then holds streaming only, not the storm of first turns).
    """
    text = script.text()
    stagger = min(script.turn_s, 2.0)
    t0 = time.perf_counter()
    window = Window(start=t0 + stagger + 0.5, end=t0 + stagger + 0.5 + measure_s)
    first_tokens = 0
    all_streaming = asyncio.Event()
    if steady:
        window.start = window.end = math.inf

    async def worker(index: int) -> None:
        await asyncio.sleep(stagger * index / streams)
        while time.perf_counter() < window.end:
            try:
                prepared = await target.prepare(index)
                started = time.perf_counter()
                last = 0.0
                async for piece in target.stream(index, prepared, text):
                    now = time.perf_counter()
                    if not last:
                        nonlocal first_tokens
                        first_tokens += 1
                        if first_tokens >= streams:
                            all_streaming.set()
                        if window.inside(started):
                            window.ttfts.append(now - started)
                    elif window.inside(now):
                        window.gaps.append(now - last)
                    if window.inside(now):
                        window.tokens += len(piece.split())
                    last = now
                if window.inside(time.perf_counter()):
                    window.turns += 1
            except Exception as error:  # a failed turn is counted, and the stream goes on
                if window.inside(time.perf_counter()):
                    window.errors[f"{type(error).__name__}: {str(error)[:120]}"] += 1
                await asyncio.sleep(0.05)

    workers = [asyncio.create_task(worker(i)) for i in range(streams)]
    if steady:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_streaming.wait(), stagger + 20)
        window.start = time.perf_counter() + 0.2
        window.end = window.start + measure_s
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    before = procs.cpu()
    router_before = await target_metrics(target)
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    after = procs.cpu()
    router_after = await target_metrics(target)
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    await target.after_window()
    settle_s = await settle(procs, getattr(target, "backend", None))
    result = window.summary(measure_s)
    result["cpu_s"] = cpu_delta(before, after)
    result["settle_s"] = round(settle_s, 2)
    result["_router"] = {k: v - router_before.get(k, 0.0) for k, v in router_after.items()}
    result |= router_view(result["_router"])
    result["_window"] = window
    return result


async def settle(procs: Processes, backend: tuple[str, int] | None, limit_s: float = 30.0) -> float:
    """Wait until no proxy works on what a window left (LiteLLM serves requests queued before
    their clients left, and retries streams the backend ended), so the next window starts clean."""
    started = time.monotonic()
    proxies = [name for name in ("router", "litellm") if name in procs.pids]
    while time.monotonic() - started < limit_s:
        before = procs.cpu()
        await asyncio.sleep(0.5)
        after = procs.cpu()
        busy = any(after[name] - before[name] > 0.05 for name in proxies)  # over 10% of a core
        upstream = (await asyncio.to_thread(backend_stats, *backend))["open_streams"] if backend else 0
        if upstream:
            await asyncio.to_thread(backend_reset, *backend)  # type: ignore[misc]
        if not busy and not upstream:
            break
    return time.monotonic() - started


async def rounds(targets: Sequence[Target], streams: int, script: Script, round_s: float, count: int,
                 procs: Processes) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Every target `count` times, alternating; the windows of a target are pooled."""
    pooled: dict[str, Window] = {}
    cpu: dict[str, Counter[str]] = {}
    router: dict[str, Counter[str]] = {}
    for _ in range(count):
        for target in targets:
            result = await drive(target, streams, script, round_s, procs)
            window: Window = result["_window"]
            pooled.setdefault(target.name, Window(0, 0)).merge(window)
            cpu.setdefault(target.name, Counter()).update(result["cpu_s"])
            router.setdefault(target.name, Counter()).update(result["_router"])
    out: dict[str, dict[str, Any]] = {}
    for name, window in pooled.items():
        out[name] = window.summary(round_s * count)
        out[name]["cpu_s"] = {k: round(v, 2) for k, v in cpu[name].items()}
        out[name] |= router_view(dict(router[name]))
    return out


def compare(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Added TTFT and ITL of each proxy over its straight path (ms)."""
    found: dict[str, dict[str, float]] = {}
    for proxy, straight in BASELINE.items():
        if proxy in results and straight in results:
            p, s = results[proxy], results[straight]
            found[proxy] = {
                "added_ttft_p50_ms": added(p, s, "ttft_p50_ms"),
                "added_ttft_p99_ms": added(p, s, "ttft_p99_ms"),
                "added_itl_p50_ms": added(p, s, "itl_p50_ms"),
                "added_itl_p99_ms": added(p, s, "itl_p99_ms"),
                "tokens_per_s_ratio": p["tokens_per_s"] / s["tokens_per_s"]
                if s["tokens_per_s"]
                else math.nan,
            }
    return found


async def idle_memory(target: Target, process: str, count: int, procs: Processes) -> dict[str, Any]:
    """RSS growth of the proxy while `count` streams wait for their first token."""
    script = Script(ttft_ms=60_000, tokens_per_second=10, reply_tokens=5)
    text = script.text()
    before = procs.rss(process)

    async def hold(index: int) -> None:
        prepared = await target.prepare(index)
        async for _ in target.stream(index, prepared, text):
            pass

    tasks = [asyncio.create_task(hold(i)) for i in range(count)]
    # Open when the backend holds them all; where it cannot tell (Triton), when the proxy's
    # memory has stopped growing. Well before the router's first-token timeout (15 s).
    deadline = time.monotonic() + 10
    await asyncio.sleep(2.0)
    upstream, last = await target.open_upstream(), procs.rss(process)
    while time.monotonic() < deadline and upstream < count:
        await asyncio.sleep(1.0)
        upstream, rss = await target.open_upstream(), procs.rss(process)
        if upstream < 0 and abs(rss - last) < 64 * 1024:
            break
        last = rss
    await asyncio.sleep(0.5)
    failed = Counter(
        f"{type(e).__name__}: {str(e)[:120]}" for t in tasks if t.done() and (e := t.exception())
    )
    during = procs.rss(process)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await target.after_window()
    await settle(procs, getattr(target, "backend", None))
    return {
        "streams": count,
        "upstream_open": upstream,
        "failed": sum(failed.values()),
        "errors": dict(failed),
        "rss_before_mib": before / 2**20,
        "rss_open_mib": during / 2**20,
        "kib_per_stream": (during - before) / count / 1024,
    }


async def sweep(targets: dict[str, Target], counts: Sequence[int], script: Script, measure_s: float,
                procs: Processes) -> dict[str, Any]:  # fmt: skip
    """Paced streams at rising counts; each proxy until its added ITL p99 first passes the budget."""
    steps: list[dict[str, Any]] = []
    alive = {p for p in BASELINE if p in targets and BASELINE[p] in targets}
    held = dict.fromkeys(alive, 0)
    for count in counts:
        if not alive:
            break
        names = sorted({BASELINE[p] for p in alive}) + sorted(alive)
        step: dict[str, Any] = {"streams": count, "offered_tokens_per_s": count * script.offered_tokens_per_s}
        for name in names:
            result = await drive(targets[name], count, script, measure_s, procs, steady=True)
            result.pop("_window")
            result.pop("_router")
            step[name] = result
        for proxy in sorted(alive):
            extra = added(step[proxy], step[BASELINE[proxy]], "itl_p99_ms")
            step[proxy]["added_itl_p99_ms"] = extra
            if extra < ITL_BUDGET_MS and not step[proxy]["errors"]:
                held[proxy] = count
            else:
                alive.discard(proxy)
        steps.append(step)
    return {"steps": steps, "max_streams_itl_p99_under_5ms": held}

"""The chat turn: what svc_router adds to a model's stream, against straight calls and LiteLLM.

Every number comes from one run on this machine. Two scripted backends, so that no model's
own cost is in the numbers: Triton's parley-scripted (`model_repo/README.md`) and
scripted-openai (`bench/scripted_openai.py`, a double of an OpenAI-compatible server that
answers exactly as parley-scripted does). Each turn is scripted by a directive in its user
message (`[scripted ttft_ms=.. tokens_per_second=.. reply_tokens=..]`), so every path
carries the same text and the backend paces every path alike.

Paths ("targets"), each a client in this process:
- `triton`: straight to Triton (`tritonclient.grpc.aio` stream_infer, one stream per turn,
  as the router's Triton backend calls it).
- `parley-triton`: through svc_router (`ChatService.StreamTurn`, a real user's token) to
  the catalog model `bench-triton` (Triton, parley-scripted).
- `openai`: straight to scripted-openai (aiohttp, streamed SSE).
- `litellm`: through LiteLLM's proxy (`litellm[proxy]` in a venv of its own,
  `bench/litellm_env.py`: one worker, master key, no database, telemetry off) to the same
  scripted-openai.
- `parley-openai`: through svc_router to the catalog model `bench-openai` (kind "openai",
  the same scripted-openai).
Parley is measured at the router's own port (not through Envoy): the router as the stack
runs it (`python -m svc_router`, its stack environment), with a bench catalog, an
endpoint for scripted-openai and tier limits that never throttle the bench. A Parley turn
does what a real one does: admission (Redis), the user message stored in svc_history
(Cassandra) before the backend is called, the turn log, the assistant message and the
usage event; each turn runs in a conversation that holds at most `--turns-per-conversation`
turns, made before the turn's clock starts.

What each number means:
- TTFT: request sent -> first content token received (Parley: the first TextDelta; the
  TurnStarted event before it does not count). Inter-token latency (ITL): the gap between
  two content tokens of one stream. Both in ms, p50 and p99 (nearest rank).
- "added": the proxy's value minus the straight path's, measured in the same run, in
  alternating rounds (straight, proxy, straight, proxy, ...) so drift hits both alike:
  `parley-triton` against `triton`; `parley-openai` and `litellm` against `openai`.
- `router_ttft_mean_ms`, `router_added_ttft_mean_ms` (Parley paths; "router +TTFT" in the
  table): the router's own histograms over the same windows, means: TTFT from the request's
  arrival, and the part of it that is not the backend's own wait for its first event
  (admission, storing the user message, reading the context, counting tokens).
- `latency`: N concurrent streams (`--levels`, default 1, 50, 200) each running turns back
  to back (`--ttft-ms`, `--pace` tokens/s, `--reply-tokens`); the streams start spread over
  one turn, and only what happens inside the measuring window counts (turns still running
  when it closes are cancelled: CancelTurn for Parley, a closed connection for HTTP).
- `saturation`: unpaced streams (`tokens_per_second=0`: the backend sends as fast as the
  path takes them), `--flood-streams` of them; tokens/s delivered to the client, and the
  ratio proxy / straight. `proxy_cpu_ms_per_1k_tokens` is the proxy process's own CPU per
  thousand tokens (the cost that does not depend on who else shares the cores).
- `sweep`: paced streams (`--sweep-pace`, long replies) at increasing counts
  (`--sweep`); `max_streams_itl_p99_under_5ms` is the largest count up to which the added
  ITL p99 stayed under 5 ms at every step (the sweep of a target stops after its first
  step over). `offered_tokens_per_s` is what the streams would get at their pace; a
  straight path that delivers much less was limited by the client or backend, not the proxy.
- `idle_memory`: `--idle-streams` turns opened and left waiting for a first token (60 s
  TTFT), after a warm-up; RSS growth of the proxy's process over their count, KiB per
  stream. Measured before the load phases, and once per process (a second measure in the
  same process reuses what the first freed): the router's with `parley-openai`, beside
  LiteLLM on the same backend.
- `cpu_s`: CPU seconds of each process (its children included: Triton's model stub) inside
  each window, from /proc; `client` is this process. `backend_direct` in `saturation` is
  scripted-openai's own throughput straight from this client, so a reader can see that the
  double is not the limit.

This machine has 2 cores: the client (this process, one event loop), the backend, the
proxy and for Parley svc_history, Redis and Cassandra share them, so absolute numbers are
lower bounds of what each part does alone; the ratios and added latencies compare paths
under the same sharing. The CPU seconds per process say who used the cores.

The bench's router runs with `abandon_grace_s = 0`: a window ends by dropping its streams,
and a turn has no name to cancel (TurnStarted) before its first token, so with the default
grace a turn still waiting would stream on into the next window. Turns with a name are
cancelled with CancelTurn. `streams_left_open_after_cancel` counts the backend streams a
proxy still held 3 s after its clients left (ended by the bench before the next window).

Run (about 8 min once the stack is up):
`PARLEY_TEST_PORT_OFFSET=9000 .venv/bin/python -m bench.router_bench`
A quick run (about 3 min): `... --round-s 2 --rounds 1 --single-round-s 3 --sweep 5,10,25,50,100`;
more samples: `--round-s 10 --rounds 3`; only some paths: `--targets triton,parley-triton`.
Starts what it needs at port offset 1000, or PARLEY_TEST_PORT_OFFSET (`--keep-stack` leaves
it running for the next run); installs LiteLLM into `.state/cache/litellm` the first time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import secrets
import sys
import time
import tomllib
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import grpc
import numpy as np
from tritonclient.grpc import InferInput
from tritonclient.grpc.aio import InferenceServerClient

from bench._measure import cpu_delta, cpu_s, json_ready, percentile
from bench.litellm_env import LITELLM_REQUIREMENT, free_port, litellm_proxy
from bench.scripted_openai import backend_reset, backend_stats, scripted_openai_spec
from parley.chat.v1 import chat_pb2
from parley.history.v1 import history_pb2
from parley.session.v1 import session_pb2
from parley_core.logging import configure_logging
from parley_core.stubs import chat_stub, history_stub, session_stub
from parley_stack.config import REPO_ROOT, StackConfig
from parley_stack.process import ProcessTable
from parley_stack.servers.base import ProcessSpec
from parley_stack.servers.services import RouterService, grpc_serving
from parley_stack.testing import LocalStack, test_port_offset

TRITON_MODEL = "bench-triton"
OPENAI_MODEL = "bench-openai"
OPENAI_ENDPOINT = "bench"
SCRIPTED_OPENAI_MODEL = "scripted"
PASSWORD = "benchmark passphrase 1"
MAX_TOKENS = 1024
ALL_TARGETS = ("triton", "parley-triton", "openai", "litellm", "parley-openai")
#: Which straight path each proxy is compared with.
BASELINE = {"parley-triton": "triton", "parley-openai": "openai", "litellm": "openai"}
#: The proxies' processes, whose memory and CPU are the subject.
PROXY_PROCESS = {"parley-triton": "router", "parley-openai": "router", "litellm": "litellm"}
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


# The script -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Script:
    ttft_ms: int
    tokens_per_second: float
    reply_tokens: int

    @property
    def turn_s(self) -> float:
        """How long one turn takes at the backend (an unpaced one: a guess)."""
        pace = self.reply_tokens / self.tokens_per_second if self.tokens_per_second else 0.05
        return self.ttft_ms / 1000 + pace

    @property
    def offered_tokens_per_s(self) -> float:
        """Tokens per second one stream gets at this pace, turn after turn."""
        return self.reply_tokens / self.turn_s

    def text(self) -> str:
        pace = f"{self.tokens_per_second:g}"
        return (
            f"benchmark turn [scripted ttft_ms={self.ttft_ms} tokens_per_second={pace} "
            f"reply_tokens={self.reply_tokens}]"
        )


# Targets ------------------------------------------------------------------------------


class TurnFailedError(Exception):
    pass


class Target(Protocol):
    name: str

    async def prepare(self, worker: int) -> Any:
        """What a turn needs that is not part of its time (a Parley conversation)."""

    def stream(self, worker: int, prepared: Any, text: str) -> AsyncIterator[str]:
        """The content pieces of one turn, as they arrive."""

    async def after_window(self) -> None:
        """Cancel what the window left running and wait until the backend is quiet."""

    async def open_upstream(self) -> int:
        """Streams the backend holds open now (-1: the backend cannot tell)."""


class TritonDirect:
    """Straight to Triton, as the router's Triton backend calls it."""

    name = "triton"

    def __init__(self, client: InferenceServerClient, model: str) -> None:
        self.client = client
        self.model = model

    async def prepare(self, worker: int) -> None:
        return None

    async def stream(self, worker: int, prepared: Any, text: str) -> AsyncIterator[str]:
        messages = InferInput("messages", [1], "BYTES")
        content = json.dumps([{"role": "user", "content": text}]).encode()
        messages.set_data_from_numpy(np.array([content], dtype=np.object_))
        max_tokens = InferInput("max_tokens", [1], "INT32")
        max_tokens.set_data_from_numpy(np.array([MAX_TOKENS], dtype=np.int32))
        request = {"model_name": self.model, "inputs": [messages, max_tokens], "request_id": uuid.uuid4().hex}

        async def once() -> AsyncIterator[dict[str, Any]]:
            yield request

        responses = self.client.stream_infer(once(), headers={"triton_grpc_error": "true"})
        finished = False
        try:
            async for result, error in responses:
                if error is not None:
                    raise TurnFailedError(str(error))
                if result.as_numpy("completion_tokens") is not None:
                    finished = True
                    return
                piece = result.as_numpy("text").reshape(-1)[0]
                yield piece.decode() if isinstance(piece, bytes) else str(piece)
        finally:
            if not finished:
                responses.cancel()

    async def after_window(self) -> None:
        await asyncio.sleep(0.3)  # parley-scripted sees a cancel within 50 ms

    async def open_upstream(self) -> int:
        return -1


class OpenAIStream:
    """An OpenAI-compatible endpoint: scripted-openai itself, or LiteLLM in front of it.

    The client is aiohttp, not httpx: at 200 streams httpx's connection pool cost this
    process 4 times the CPU per token and was the first thing to saturate (measured here).
    """

    def __init__(self, name: str, http: aiohttp.ClientSession, base_url: str, api_key: str, model: str,
                 backend: tuple[str, int]) -> None:  # fmt: skip
        self.name = name
        self.http = http
        self.url = f"{base_url}/chat/completions"
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.model = model
        self.backend = backend
        #: Streams the backend still held after each window's cancels (a proxy that does not
        #: pass a client's disconnect on keeps them).
        self.left_open: list[int] = []

    async def prepare(self, worker: int) -> None:
        return None

    async def stream(self, worker: int, prepared: Any, text: str) -> AsyncIterator[str]:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": MAX_TOKENS,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with self.http.post(self.url, json=body, headers=self.headers) as response:
            if response.status != 200:
                raise TurnFailedError(f"HTTP {response.status}: {(await response.read())[:200]!r}")
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    return
                chunk = json.loads(data)
                if "error" in chunk:
                    raise TurnFailedError(str(chunk["error"])[:200])
                for choice in chunk.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        yield content

    async def after_window(self) -> None:
        self.left_open.append(await _backend_quiet(self.backend))

    async def open_upstream(self) -> int:
        return (await asyncio.to_thread(backend_stats, *self.backend))["open_streams"]


async def _backend_quiet(backend: tuple[str, int], grace_s: float = 3.0) -> int:
    """Wait until scripted-openai holds no stream; what a proxy still holds after grace_s (it did
    not pass the cancel on) is ended, so that the next window starts clean. Returns that count."""
    deadline = time.monotonic() + grace_s
    while (open_now := (await asyncio.to_thread(backend_stats, *backend))["open_streams"]) > 0:
        if time.monotonic() > deadline:
            await asyncio.to_thread(backend_reset, *backend)
            return int(open_now)
        await asyncio.sleep(0.1)
    return 0


@dataclass(frozen=True)
class User:
    name: str
    metadata: tuple[tuple[str, str], ...]


class ParleyChat:
    """svc_router's StreamTurn, as a user's client calls it."""

    def __init__(self, name: str, channels: Sequence[grpc.aio.Channel], history: grpc.aio.Channel,
                 users: Sequence[User], model: str, turns_per_conversation: int,
                 backend: tuple[str, int] | None) -> None:  # fmt: skip
        self.name = name
        self.stubs = [chat_stub(c) for c in channels]
        self.history = history_stub(history)
        self.users = users
        self.model = model
        self.turns_per_conversation = turns_per_conversation
        self.backend = backend
        self.conversations: dict[int, tuple[str, int]] = {}
        #: Turns started and not ended, with the metadata that may cancel them.
        self.running: dict[str, tuple[tuple[str, str], ...]] = {}
        self.started = 0
        self.left_open: list[int] = []
        #: The router's Prometheus endpoint, for its own view of TTFT.
        self.metrics_url = ""

    def _user(self, worker: int) -> User:
        return self.users[worker % len(self.users)]

    async def prepare(self, worker: int) -> str:
        name, used = self.conversations.get(worker, ("", self.turns_per_conversation))
        if used >= self.turns_per_conversation:
            reply = await self.history.CreateConversation(
                history_pb2.CreateConversationRequest(
                    parent="users/me", conversation=history_pb2.Conversation(title="bench")
                ),
                metadata=self._user(worker).metadata,
            )
            name, used = reply.conversation.name, 0
        self.conversations[worker] = (name, used + 1)
        return name

    async def stream(self, worker: int, prepared: Any, text: str) -> AsyncIterator[str]:
        user = self._user(worker)
        turn_input = chat_pb2.TurnInput(
            conversation=prepared, text=text, model=self.model, idempotency_key=str(uuid.uuid4())
        )
        call = self.stubs[worker % len(self.stubs)].StreamTurn(
            chat_pb2.StreamTurnRequest(input=turn_input), metadata=user.metadata
        )
        turn = ""
        ended = False
        try:
            async for response in call:
                event = response.event
                kind = event.WhichOneof("kind")
                if kind == "delta":
                    yield event.delta.text
                elif kind == "started":
                    turn = event.turn
                    self.running[turn] = user.metadata
                    self.started += 1
                elif kind == "completed":
                    ended = True
                    if event.completed.finish_reason == chat_pb2.FINISH_REASON_ERROR:
                        raise TurnFailedError(
                            f"{event.completed.error_reason}: {event.completed.error_message}"
                        )
                    return
            ended = True
            raise TurnFailedError("the stream ended without TurnCompleted")
        finally:
            if turn and ended:
                self.running.pop(turn, None)
            if not ended:
                call.cancel()

    async def after_window(self) -> None:
        """CancelTurn every turn the window left running (a user pressing stop)."""
        running, self.running = self.running, {}
        gate = asyncio.Semaphore(64)

        async def cancel(turn: str, metadata: tuple[tuple[str, str], ...]) -> None:
            async with gate:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await self.stubs[0].CancelTurn(chat_pb2.CancelTurnRequest(name=turn), metadata=metadata)

        await asyncio.gather(*(cancel(t, m) for t, m in running.items()))
        if self.backend is not None:
            self.left_open.append(await _backend_quiet(self.backend))
        else:
            await asyncio.sleep(0.3)

    async def open_upstream(self) -> int:
        if self.backend is not None:
            return (await asyncio.to_thread(backend_stats, *self.backend))["open_streams"]
        return -1


async def target_metrics(target: Target) -> dict[str, float]:
    """The router's own TTFT histograms (sums and counts) for a Parley target; {} for others."""
    url = getattr(target, "metrics_url", None)
    if not url:
        return {}
    return await asyncio.to_thread(_scrape, url, getattr(target, "model", ""))


def _scrape(url: str, model: str) -> dict[str, float]:
    found: dict[str, float] = {}
    with urllib.request.urlopen(url, timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            for metric in ("parley_turn_ttft_seconds", "parley_turn_added_ttft_seconds"):
                for part in ("_sum", "_count"):
                    prefix = f'{metric}{part}{{model="{model}"}} '
                    if line.startswith(prefix):
                        found[metric + part] = float(line[len(prefix) :])
    return found


def router_view(delta: dict[str, float]) -> dict[str, float]:
    """Mean TTFT and added TTFT as the router itself timed them (from the request's arrival;
    added: less the backend's own wait for its first event), from histogram sums and counts
    gained inside the windows."""
    view: dict[str, float] = {}
    for metric, key in (
        ("parley_turn_ttft_seconds", "router_ttft_mean_ms"),
        ("parley_turn_added_ttft_seconds", "router_added_ttft_mean_ms"),
    ):
        count = delta.get(metric + "_count", 0.0)
        if count > 0:
            view[key] = delta[metric + "_sum"] / count * 1000
    return view


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


# Setting up ------------------------------------------------------------------------------


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def bench_catalog() -> str:
    """Two models shaped like the repository's parley-scripted: one on Triton, one on scripted-openai."""
    repo = tomllib.loads((REPO_ROOT / "model_repo" / "catalog.toml").read_text())
    scripted = next(m for m in repo["models"] if m["name"] == "parley-scripted")
    models = [
        {
            **scripted,
            "name": TRITON_MODEL,
            "display_name": "Bench: parley-scripted on Triton",
            "fallbacks": [],
        },
        {
            **scripted,
            "name": OPENAI_MODEL,
            "display_name": "Bench: scripted-openai",
            "fallbacks": [],
            "backends": [{"kind": "openai", "endpoint": OPENAI_ENDPOINT, "model": SCRIPTED_OPENAI_MODEL}],
        },
    ]
    lines = [f"schema_version = {repo['schema_version']}", f"default_model = {_toml(TRITON_MODEL)}"]
    for model in models:
        lines += ["", "[[models]]", *(f"{key} = {_toml(value)}" for key, value in model.items())]
    return "\n".join(lines) + "\n"


def router_spec(config: StackConfig, catalog: Path, openai_base_url: str) -> ProcessSpec:
    """The stack's svc_router process, with the bench's catalog, endpoint and tier limits."""
    [spec] = RouterService(config).processes()
    host, port, metrics = config.host, free_port(), free_port()
    unlimited = {"capacity": 1_000_000_000, "refill_per_s": 1_000_000_000.0}
    tier = {"turns": unlimited, "tokens": unlimited, "tier_turns": unlimited}
    env = {
        # What the stack's own environment for svc_router may not name yet.
        "PARLEY_ROUTER_CASSANDRA_HOSTS": json.dumps([host]),
        "PARLEY_ROUTER_CASSANDRA_PORT": str(config.port("cassandra_cql")),
        "PARLEY_ROUTER_REDIS_URL": f"redis://{host}:{config.port('redis')}/0",
        "PARLEY_ROUTER_PULSAR_URL": f"pulsar://{host}:{config.port('pulsar')}",
        "PARLEY_ROUTER_JWKS_URL": f"http://{host}:{config.port('session_jwks')}/.well-known/jwks.json",
        "PARLEY_ROUTER_HISTORY_TARGET": f"{host}:{config.port('history_grpc')}",
        "PARLEY_ROUTER_TRITON_TARGET": f"{host}:{config.port('triton_grpc')}",
        **spec.env,
        # The bench's own.
        "PARLEY_ROUTER_PORT": str(port),
        "PARLEY_ROUTER_METRICS_PORT": str(metrics),
        "PARLEY_ROUTER_CATALOG_PATH": str(catalog),
        "PARLEY_ROUTER_OPENAI_ENDPOINTS": json.dumps({OPENAI_ENDPOINT: {"base_url": openai_base_url}}),
        "PARLEY_ROUTER_TIERS": json.dumps({name: tier for name in ("free", "pro", "enterprise")}),
        # A window ends by dropping its streams. A turn gets its name (TurnStarted) only with
        # its first token, so one still waiting cannot be cancelled by name; with the default
        # grace (15 s) it would stream on into the next window.
        "PARLEY_ROUTER_ABANDON_GRACE_S": "0",
    }
    return replace(
        spec,
        name="svc_router-bench",
        env=env,
        ready=lambda: grpc_serving(host, port),
        endpoints={"grpc": f"{host}:{port}", "metrics": f"{host}:{metrics}"},
        ready_timeout_s=60,
    )


def start(table: ProcessTable, spec: ProcessSpec, server: str) -> int:
    """Start spec as a process of the stack (so `parley down` stops it too); its pid."""
    if table.running(spec.name) is not None:
        table.stop(spec.name)
    running = table.start(spec, server)
    deadline = time.monotonic() + spec.ready_timeout_s
    while not spec.ready():
        if table.running(spec.name) is None or time.monotonic() > deadline:
            table.stop(spec.name)
            raise RuntimeError(f"{spec.name} did not become ready; see {table.config.log_path(spec.name)}")
        time.sleep(0.25)
    return running.pid


async def register_users(session_target: str, count: int) -> list[User]:
    run_id = secrets.token_hex(4)
    async with grpc.aio.insecure_channel(session_target) as channel:
        stub = session_stub(channel)
        users = []
        for index in range(count):
            reply = await stub.Register(
                session_pb2.RegisterRequest(
                    email=f"router-bench-{run_id}-{index}@parley.test",
                    password=PASSWORD,
                    display_name="Bench",
                )
            )
            users.append(
                User(reply.user.name, (("authorization", f"Bearer {reply.credentials.access_token}"),))
            )
    return users


# The run ------------------------------------------------------------------------------------


@dataclass
class Options:
    targets: list[str]
    levels: list[int]
    round_s: float
    single_round_s: float
    rounds: int
    ttft_ms: int
    pace: float
    reply_tokens: int
    flood_streams: int
    flood_reply_tokens: int
    sweep: list[int]
    sweep_paths: list[str]
    sweep_pace: float
    sweep_reply_tokens: int
    sweep_s: float
    idle_streams: int
    users: int
    turns_per_conversation: int
    keep_stack: bool


async def run(options: Options) -> dict[str, Any]:
    config = StackConfig(port_offset=test_port_offset())
    stack = LocalStack(config, reuse=options.keep_stack)
    table = stack.stack.table
    wanted = set(options.targets)
    parley = bool(wanted & {"parley-triton", "parley-openai"})
    needs = {"triton"} if wanted & {"triton", "parley-triton"} else set()
    if parley:
        needs |= {"triton", "redis", "cassandra", "pulsar", "svc_session", "svc_history"}
    results: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "port_offset": config.port_offset},
        "litellm": LITELLM_REQUIREMENT,
        "options": vars(options),
    }
    procs = Processes()
    started: list[str] = []
    async_closers: list[Callable[[], Awaitable[object]]] = []
    try:
        if needs:
            await asyncio.to_thread(stack.ensure, *sorted(needs))
        for name in ("triton", "svc_history", "svc_session", "cassandra-1", "redis", "pulsar"):
            running = table.running(name)
            if running is not None and (name == "triton" or parley):
                procs.add(name, running.pid)
        host = config.host
        openai_port = free_port()
        backend = (host, openai_port)
        targets: dict[str, Target] = {}
        http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120),
        )
        async_closers.append(http.close)
        if wanted & {"openai", "litellm", "parley-openai"}:
            spec = scripted_openai_spec("scripted-openai-bench", host, openai_port, SCRIPTED_OPENAI_MODEL)
            procs.add("scripted_openai", await asyncio.to_thread(start, table, spec, "scripted-openai"))
            started.append(spec.name)
            base_url = f"http://{host}:{openai_port}/v1"
            targets["openai"] = OpenAIStream("openai", http, base_url, "none", SCRIPTED_OPENAI_MODEL, backend)
        if "litellm" in wanted:
            proxy = await asyncio.to_thread(
                litellm_proxy, config, "litellm-bench", free_port(), SCRIPTED_OPENAI_MODEL,
                f"http://{host}:{openai_port}/v1",
            )  # fmt: skip
            procs.add("litellm", await asyncio.to_thread(start, table, proxy.spec, "litellm"))
            started.append(proxy.spec.name)
            targets["litellm"] = OpenAIStream(
                "litellm", http, proxy.base_url, proxy.api_key, proxy.model, backend
            )
        if wanted & {"triton", "parley-triton"}:
            triton = InferenceServerClient(url=f"{host}:{config.port('triton_grpc')}")
            async_closers.append(triton.close)
            targets["triton"] = TritonDirect(triton, "parley-scripted")
        if parley:
            catalog = config.data_dir("router-bench") / "catalog.toml"
            catalog.write_text(bench_catalog())
            spec = router_spec(config, catalog, f"http://{host}:{openai_port}/v1")
            procs.add("router", await asyncio.to_thread(start, table, spec, "svc_router"))
            started.append(spec.name)
            users = await register_users(f"{host}:{config.port('session_grpc')}", options.users)
            # A few connections, as several clients would open; grpc would share one otherwise.
            channels = [
                grpc.aio.insecure_channel(
                    spec.endpoints["grpc"], options=[("grpc.use_local_subchannel_pool", 1)]
                )
                for _ in range(4)
            ]
            history = grpc.aio.insecure_channel(f"{host}:{config.port('history_grpc')}")
            for channel in (*channels, history):
                async_closers.append(channel.close)
            for name, model, upstream in (
                ("parley-triton", TRITON_MODEL, None),
                ("parley-openai", OPENAI_MODEL, backend),
            ):
                if name in wanted:
                    chat = ParleyChat(
                        name, channels, history, users, model, options.turns_per_conversation, upstream
                    )
                    chat.metrics_url = f"http://{spec.endpoints['metrics']}/metrics"
                    targets[name] = chat
        # The targets in the order asked, straight paths first within each pair.
        order = [t for t in ALL_TARGETS if t in wanted and t in targets]
        chosen = [targets[t] for t in order]
        log = _progress

        log(f"warm-up: {', '.join(order)}")
        warm = Script(options.ttft_ms, options.pace * 5, options.reply_tokens)
        for target in chosen:
            result = await drive(target, 8, warm, 2.0, procs)
            if result["errors"]:
                log(f"  {target.name}: warm-up errors {result['errors']}")

        # One measure per proxy process: a second one in the same process would reuse what the
        # first freed. The router's is taken with parley-openai, beside LiteLLM on the same backend.
        results["idle_memory"] = {}
        measured_processes: set[str] = set()
        for name in ("parley-openai", "litellm", "parley-triton"):
            process = PROXY_PROCESS[name]
            if options.idle_streams > 0 and name in order and process not in measured_processes:
                measured_processes.add(process)
                log(f"idle memory: {name}, {options.idle_streams} streams")
                results["idle_memory"][name] = await idle_memory(
                    targets[name], process, options.idle_streams, procs
                )

        script = Script(options.ttft_ms, options.pace, options.reply_tokens)
        results["latency"] = {"script": vars(script) | {"text": script.text()}}
        for level in options.levels:
            log(f"latency: {level} streams")
            # One stream runs few turns in a window: it gets a longer one.
            seconds = max(options.round_s, options.single_round_s if level == 1 else 0.0)
            measured = await rounds(chosen, level, script, seconds, options.rounds, procs)
            results["latency"][str(level)] = {"paths": measured, "added": compare(measured)}

        if options.flood_streams > 0:
            flood = Script(options.ttft_ms, 0, options.flood_reply_tokens)
            log(f"saturation: {options.flood_streams} unpaced streams")
            measured = await rounds(
                chosen, options.flood_streams, flood, options.round_s, options.rounds, procs
            )
            saturation: dict[str, Any] = {"script": vars(flood), "paths": measured}
            for path, straight in BASELINE.items():
                if path in measured and straight in measured:
                    tokens = measured[path]["tokens_per_s"] * options.round_s * options.rounds
                    cpu = measured[path]["cpu_s"].get(PROXY_PROCESS[path], math.nan)
                    saturation[path] = {
                        "tokens_per_s": measured[path]["tokens_per_s"],
                        "straight_tokens_per_s": measured[straight]["tokens_per_s"],
                        "ratio": measured[path]["tokens_per_s"] / measured[straight]["tokens_per_s"],
                        "proxy_cpu_ms_per_1k_tokens": cpu * 1000 / (tokens / 1000) if tokens else math.nan,
                    }
            if "openai" in measured:
                saturation["backend_direct"] = {
                    "tokens_per_s": measured["openai"]["tokens_per_s"],
                    "backend_cpu_s": measured["openai"]["cpu_s"].get("scripted_openai"),
                    "client_cpu_s": measured["openai"]["cpu_s"].get("client"),
                    "seconds": options.round_s * options.rounds,
                }
            results["saturation"] = saturation

        if options.sweep:
            log(f"sweep: {options.sweep} streams")
            paced = Script(options.ttft_ms, options.sweep_pace, options.sweep_reply_tokens)
            swept = {n: targets[n] for n in options.sweep_paths if n in targets}
            swept |= {BASELINE[n]: targets[BASELINE[n]] for n in swept if BASELINE[n] in targets}
            results["sweep"] = {"script": vars(paced)} | await sweep(
                swept, options.sweep, paced, options.sweep_s, procs
            )
        results["streams_left_open_after_cancel"] = {
            t.name: sum(t.left_open) for t in chosen if isinstance(t, OpenAIStream | ParleyChat)
        }
        results["client_max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        for close in reversed(async_closers):
            with contextlib.suppress(Exception):
                await close()
        for name in reversed(started):
            await asyncio.to_thread(table.stop, name)
        if not options.keep_stack:
            await asyncio.to_thread(stack.close)
    return results


def _progress(message: str) -> None:
    print(f"bench: {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# Output ---------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.1f}"
    return str(value)


def table(results: dict[str, Any]) -> str:
    """The headline numbers as a plain table."""
    rows = [
        (
            "streams",
            "path",
            "TTFT p50",
            "TTFT p99",
            "ITL p99",
            "tok/s",
            "+TTFT p50",
            "+TTFT p99",
            "+ITL p99",
            "router +TTFT",
        )
    ]
    for level, entry in results.get("latency", {}).items():
        if level == "script":
            continue
        for path, r in entry["paths"].items():
            extra = entry["added"].get(path, {})
            rows.append((
                level, path, _fmt(r["ttft_p50_ms"]), _fmt(r["ttft_p99_ms"]), _fmt(r["itl_p99_ms"]),
                _fmt(r["tokens_per_s"]), _fmt(extra.get("added_ttft_p50_ms", math.nan)),
                _fmt(extra.get("added_ttft_p99_ms", math.nan)), _fmt(extra.get("added_itl_p99_ms", math.nan)),
                _fmt(r.get("router_added_ttft_mean_ms", math.nan)),
            ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.append("")
    for path, entry in results.get("saturation", {}).items():
        if isinstance(entry, dict) and "ratio" in entry:
            lines.append(
                f"saturation {path}: {entry['tokens_per_s']:.0f} tok/s, straight "
                f"{entry['straight_tokens_per_s']:.0f} (ratio {entry['ratio']:.2f}); proxy CPU "
                f"{entry['proxy_cpu_ms_per_1k_tokens']:.0f} ms per 1k tokens"
            )
    for path, entry in results.get("idle_memory", {}).items():
        lines.append(
            f"idle memory {path}: {entry['kib_per_stream']:.1f} KiB per stream ({entry['streams']} streams)"
        )
    held = results.get("sweep", {}).get("max_streams_itl_p99_under_5ms", {})
    for path, count in held.items():
        lines.append(f"sweep {path}: held {count} streams with added ITL p99 under {ITL_BUDGET_MS:g} ms")
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", default=",".join(ALL_TARGETS), help="paths to measure, comma-separated")
    parser.add_argument("--levels", type=_ints, default=[1, 50, 200], help="concurrent streams for latency")
    parser.add_argument("--round-s", type=float, default=3.0, help="seconds of one measuring window")
    parser.add_argument("--single-round-s", type=float, default=8.0, help="window at 1 stream")
    parser.add_argument("--rounds", type=int, default=2, help="alternating windows per path and level")
    parser.add_argument("--ttft-ms", type=int, default=20, help="the backend's time to first token")
    parser.add_argument("--pace", type=float, default=5.0, help="tokens/s of one stream (latency)")
    parser.add_argument("--reply-tokens", type=int, default=10, help="tokens of one reply (latency)")
    parser.add_argument("--flood-streams", type=int, default=32, help="unpaced streams; 0 skips")
    parser.add_argument("--flood-reply-tokens", type=int, default=200)
    parser.add_argument(
        "--sweep", type=_ints, default=[5, 10, 25, 50, 100, 200, 400, 800], help="'' skips the sweep"
    )
    parser.add_argument("--sweep-paths", default="parley-openai,litellm", help="proxies in the sweep")
    parser.add_argument("--sweep-pace", type=float, default=10.0, help="tokens/s of one stream (sweep)")
    parser.add_argument("--sweep-reply-tokens", type=int, default=100)
    parser.add_argument("--sweep-s", type=float, default=4.0, help="seconds of one sweep window")
    parser.add_argument("--idle-streams", type=int, default=200, help="0 skips")
    parser.add_argument("--users", type=int, default=8, help="Parley users the streams take turns as")
    parser.add_argument("--turns-per-conversation", type=int, default=10)
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running")
    args = parser.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(targets) - set(ALL_TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; known: {', '.join(ALL_TARGETS)}")
    options = Options(
        targets=targets, levels=args.levels, round_s=args.round_s, single_round_s=args.single_round_s,
        rounds=args.rounds,
        ttft_ms=args.ttft_ms, pace=args.pace, reply_tokens=args.reply_tokens,
        flood_streams=args.flood_streams, flood_reply_tokens=args.flood_reply_tokens, sweep=args.sweep,
        sweep_paths=[p.strip() for p in args.sweep_paths.split(",") if p.strip()],
        sweep_pace=args.sweep_pace, sweep_reply_tokens=args.sweep_reply_tokens, sweep_s=args.sweep_s,
        idle_streams=args.idle_streams, users=args.users, turns_per_conversation=args.turns_per_conversation,
        keep_stack=args.keep_stack,
    )  # fmt: skip
    configure_logging("console", "warning")
    results = asyncio.run(run(options))
    print(table(results))
    print(json.dumps(json_ready(results, places=3), indent=2))


if __name__ == "__main__":
    main()

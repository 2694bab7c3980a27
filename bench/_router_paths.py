"""The router bench's paths: the script every turn carries, and one client per path.

Each client is a `Target` that bench/router_bench.py drives: straight to Triton, straight to
scripted-openai or through LiteLLM (aiohttp), and through svc_router (a user's StreamTurn).
Nothing here starts a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import grpc
import numpy as np
from tritonclient.grpc import InferInput
from tritonclient.grpc.aio import InferenceServerClient

from bench.scripted_openai import backend_reset, backend_stats
from parley.chat.v1 import chat_pb2
from parley.history.v1 import history_pb2
from parley_core.stubs import chat_stub, history_stub

MAX_TOKENS = 1024


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

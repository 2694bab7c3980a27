"""What every model backend is to the turn engine: a generation in, pieces and a finish out.

A backend's `stream` is an async generator. The engine iterates it; closing it early
(`aclose()`, which also happens when the engine's task is cancelled) must cancel the
request at the backend, so that the model itself stops generating.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    """One message of the context a model reads."""

    role: Role
    content: str


@dataclass(frozen=True)
class Generation:
    """One request to a model: the context, oldest first, ending with the user's message."""

    messages: tuple[ChatMessage, ...]
    #: The most tokens the answer may have.
    max_tokens: int
    #: Unique per try; backends pass it on (Triton's request id), so logs can be joined.
    request_id: str


@dataclass(frozen=True)
class Piece:
    """Text the model added, and how many of its tokens that text is."""

    text: str
    tokens: int = 1


@dataclass(frozen=True)
class Finish:
    """The model ended its answer; the usage is the model's own count."""

    #: "stop" (the model ended its turn) or "length" (max_tokens were generated).
    reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int


BackendEvent = Piece | Finish


class BackendError(Exception):
    """A backend failed: unreachable, refused, timed out, or broke its stream.

    `message` is safe to show to the user (no host, port or exception text); `detail` is
    for the log.
    """

    def __init__(self, message: str, *, detail: str = "", retryable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        #: False when trying another backend cannot help (the request itself is bad).
        self.retryable = retryable


@dataclass
class BackendHealth:
    """What a probe saw, for ListModels."""

    ready: bool
    detail: str = field(default="")


class Backend(Protocol):
    """A server that streams a model's answer."""

    #: Names the backend in logs, metrics and breakers: "triton:smollm2", "openai:llama/smollm2".
    @property
    def key(self) -> str: ...

    def stream(self, generation: Generation) -> AsyncIterator[BackendEvent]:
        """Pieces as the model makes them, then exactly one Finish; BackendError on failure."""
        ...

    async def probe(self) -> BackendHealth:
        """Whether the backend would serve the model now (a cheap readiness check)."""
        ...

    async def close(self) -> None: ...

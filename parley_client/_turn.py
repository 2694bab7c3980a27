"""What a client has shown of one turn, so that a lost stream resumes without a gap or a repeat."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from parley.chat.v1 import chat_pb2

__all__ = ["Backoff", "TurnProgress", "conversation_of"]


def conversation_of(turn: str) -> str:
    """The conversation of a turn name, `users/{u}/conversations/{c}/turns/{t}`."""
    conversation, found, _ = turn.rpartition("/turns/")
    return conversation if found else ""


@dataclass
class TurnProgress:
    """One turn as the client saw it: its name, the last event shown, the answer so far.

    Events carry a sequence number that counts from 1 without gaps. A stream opened again
    (a resume after `last_sequence`, or a retried start with the same idempotency key, which
    the server answers with the turn's events from the first) may repeat events the client
    already has; `accept` drops those, so each event is shown exactly once.
    """

    #: The send's idempotency key: a retried start with it resumes the turn instead of
    #: starting a second one.
    idempotency_key: str
    #: `users/{u}/conversations/{c}/turns/{t}`, once TurnStarted has arrived.
    turn: str = ""
    #: The model that answers, from TurnStarted.
    model: str = ""
    #: The sequence number of the last event accepted; 0 before the first.
    last_sequence: int = 0
    #: The answer's pieces, in order.
    pieces: list[str] = field(default_factory=list)
    #: How the turn ended, once it has.
    completed: chat_pb2.TurnCompleted | None = None
    #: Whether the user asked to cancel it (Ctrl-C).
    interrupted: bool = False

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def conversation(self) -> str:
        return conversation_of(self.turn)

    def accept(self, event: chat_pb2.TurnEvent) -> bool:
        """Record event; False when it was already seen (or belongs to another turn)."""
        if event.sequence <= self.last_sequence or (self.turn and event.turn != self.turn):
            return False
        self.last_sequence = event.sequence
        kind = event.WhichOneof("kind")
        if kind == "started":
            self.turn = event.turn or event.started.turn
            self.model = event.started.model
        elif kind == "delta":
            self.pieces.append(event.delta.text)
        elif kind == "completed":
            self.completed = event.completed
        return True

    def reopen(self, start: chat_pb2.TurnInput) -> chat_pb2.ChatRequest:
        """The first request of a new stream for this turn.

        Once the turn has a name, resume after the last event shown. Before that the client
        cannot know whether the server admitted the send, so it sends it again with the same
        idempotency key: the server starts no second turn.
        """
        if self.turn:
            return chat_pb2.ChatRequest(
                resume=chat_pb2.ResumeTurnRequest(name=self.turn, after_sequence=self.last_sequence)
            )
        return chat_pb2.ChatRequest(start=start)


class Backoff:
    """Delays between reconnects: exponential with jitter, until a window of time is used up.

    A turn whose every stream went away keeps running on the server for a short grace
    period, so reconnecting is only worth it for a while; `window_s` is that while.
    """

    def __init__(
        self,
        *,
        first_s: float = 0.25,
        most_s: float = 4.0,
        window_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.first_s, self.most_s, self.window_s = first_s, most_s, window_s
        self._clock = clock
        self._started = self._clock()
        self.attempts = 0

    def next_delay(self) -> float | None:
        """Seconds to wait before the next attempt; None once the window is used up."""
        elapsed = self._clock() - self._started
        if elapsed >= self.window_s:
            return None
        ceiling = min(self.most_s, self.first_s * 2**self.attempts)
        self.attempts += 1
        delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret
        return min(delay, self.window_s - elapsed)

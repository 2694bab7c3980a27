"""Small helpers for svc_router's tests: sending turns and reading their events."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from parley.chat.v1 import chat_pb2 as pb
from tests.integration.history.helpers import Person

if TYPE_CHECKING:
    from parley.chat.v1.chat_pb2_grpc import ChatServiceAsyncStub


@dataclass
class Transcript:
    """The events one stream received, and what they add up to."""

    events: list[pb.TurnEvent] = field(default_factory=list)

    @property
    def started(self) -> pb.TurnStarted:
        [started] = [e.started for e in self.events if e.WhichOneof("kind") == "started"]
        return started

    @property
    def completed(self) -> pb.TurnCompleted:
        [completed] = [e.completed for e in self.events if e.WhichOneof("kind") == "completed"]
        return completed

    @property
    def text(self) -> str:
        return "".join(e.delta.text for e in self.events if e.WhichOneof("kind") == "delta")

    @property
    def turn(self) -> str:
        return self.events[0].turn

    @property
    def conversation(self) -> str:
        return self.turn.rsplit("/turns/", 1)[0]

    @property
    def sequences(self) -> list[int]:
        return [e.sequence for e in self.events]


def turn_input(text: str, conversation: str = "", **fields: object) -> pb.TurnInput:
    values: dict[str, object] = {"model": "models/parley-scripted", "idempotency_key": str(uuid.uuid4())}
    values.update(fields)
    return pb.TurnInput(conversation=conversation, text=text, **values)  # type: ignore[arg-type]


async def collect(
    stream: AsyncIterable[pb.StreamTurnResponse] | AsyncIterable[pb.ResumeTurnResponse],
) -> Transcript:
    transcript = Transcript()
    async for response in stream:
        transcript.events.append(response.event)
    return transcript


async def send(
    chat: ChatServiceAsyncStub, person: Person, text: str, conversation: str = "", **fields: object
) -> Transcript:
    """One turn through StreamTurn, read to its end."""
    return await collect(
        chat.StreamTurn(
            pb.StreamTurnRequest(input=turn_input(text, conversation, **fields)), metadata=person.md
        )
    )

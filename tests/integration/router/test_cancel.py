"""Cancel: CancelTurn, a Chat stream's cancel, or a client that goes away for good. The model
sees the cancel and stops; the partial answer is kept as cancelled and billed."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from parley.chat.v1 import chat_pb2 as pb
from parley.events.v1 import events_pb2
from parley.history.v1 import history_pb2 as hpb
from parley_stack.testing import LocalStack
from tests.integration.history.helpers import EventTap, Person, all_messages, keyed
from tests.integration.router.helpers import Transcript, turn_input

if TYPE_CHECKING:
    from parley.chat.v1.chat_pb2_grpc import ChatServiceAsyncStub
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub

pytestmark = pytest.mark.integration

SLOW = "tell me everything [scripted tokens_per_second=20 reply_tokens=400]"


async def cancelled_after(log: Path, turn: str, timeout_s: float = 10.0) -> int:
    """How many tokens parley-scripted had sent when it saw the turn's cancel (its own log)."""
    turn_id = turn.rsplit("/", 1)[1]
    pattern = rf"parley-scripted: request '{re.escape(turn_id)}(?:-\d+)?' cancelled after (\d+) tokens"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.search(pattern, await asyncio.to_thread(log.read_text, errors="replace"))
        if found is not None:
            return int(found.group(1))
        await asyncio.sleep(0.1)
    raise AssertionError(f"parley-scripted never saw a cancel of {turn}")


async def _read_until_deltas(
    stream: AsyncIterable[pb.StreamTurnResponse], transcript: Transcript, deltas: int
) -> None:
    async for response in stream:
        transcript.events.append(response.event)
        if sum(1 for e in transcript.events if e.WhichOneof("kind") == "delta") >= deltas:
            return


async def _assert_kept_as_cancelled(
    history: HistoryServiceAsyncStub, person: Person, transcript: Transcript, tap: EventTap
) -> None:
    completed = transcript.completed
    assert completed.finish_reason == pb.FINISH_REASON_CANCELLED
    assert transcript.sequences == list(range(1, len(transcript.events) + 1))
    streamed_tokens = len(transcript.text.split())
    assert completed.usage.output_tokens == streamed_tokens
    assert 0 < streamed_tokens < 400
    assert completed.usage.input_tokens > 0
    [answer] = [
        m
        for m in await all_messages(history, person, transcript.conversation)
        if m.author == hpb.AUTHOR_ASSISTANT
    ]
    assert answer.state == hpb.MESSAGE_STATE_CANCELLED
    assert answer.text == transcript.text
    assert answer.usage.output_tokens == streamed_tokens
    [published] = await tap.take(keyed(person.user_id), 1)
    event = events_pb2.TurnCompleted.FromString(published.data())
    assert event.turn == transcript.turn
    assert event.finish_reason == "cancelled"
    # The model reported nothing: the router's counts, as an estimate.
    assert not event.HasField("usage")
    assert event.estimated_usage.output_tokens == streamed_tokens
    assert event.estimated_usage.input_tokens == completed.usage.input_tokens
    assert event.model == "models/parley-scripted"
    assert published.properties()["event_id"] == event.event_id


async def test_cancel_turn_stops_the_model_and_keeps_the_partial_answer_as_cancelled(
    chat: ChatServiceAsyncStub,
    history: HistoryServiceAsyncStub,
    alice: Person,
    router_servers: LocalStack,
    usage_tap: EventTap,
) -> None:
    stream = chat.StreamTurn(pb.StreamTurnRequest(input=turn_input(SLOW)), metadata=alice.md)
    transcript = Transcript()
    await _read_until_deltas(stream, transcript, 5)

    reply = await chat.CancelTurn(pb.CancelTurnRequest(name=transcript.turn), metadata=alice.md)
    assert reply.cancelled
    async for response in stream:
        transcript.events.append(response.event)

    seen = await cancelled_after(router_servers.config.log_path("triton"), transcript.turn)
    assert seen <= len(transcript.text.split()) + 1
    await _assert_kept_as_cancelled(history, alice, transcript, usage_tap)
    again = await chat.CancelTurn(pb.CancelTurnRequest(name=transcript.turn), metadata=alice.md)
    assert not again.cancelled


async def test_a_client_that_goes_away_for_good_cancels_its_turn(
    chat: ChatServiceAsyncStub,
    history: HistoryServiceAsyncStub,
    bob: Person,
    router_servers: LocalStack,
    usage_tap: EventTap,
) -> None:
    stream = chat.StreamTurn(pb.StreamTurnRequest(input=turn_input(SLOW)), metadata=bob.md)
    transcript = Transcript()
    await _read_until_deltas(stream, transcript, 3)
    stream.cancel()  # the client is gone; nobody resumes within abandon_grace_s (1 s here)

    await cancelled_after(router_servers.config.log_path("triton"), transcript.turn)
    resumed = chat.ResumeTurn(
        pb.ResumeTurnRequest(name=transcript.turn, after_sequence=transcript.events[-1].sequence),
        metadata=bob.md,
    )
    async for response in resumed:
        transcript.events.append(response.event)
    await _assert_kept_as_cancelled(history, bob, transcript, usage_tap)


async def test_a_chat_stream_runs_turns_and_cancels_one_by_name(
    chat: ChatServiceAsyncStub, router_servers: LocalStack, alice: Person
) -> None:
    outgoing: asyncio.Queue[pb.ChatRequest | None] = asyncio.Queue()

    async def requests() -> AsyncIterator[pb.ChatRequest]:
        while (request := await outgoing.get()) is not None:
            yield request

    call = chat.Chat(requests(), metadata=alice.md)
    await outgoing.put(pb.ChatRequest(start=turn_input("first question")))
    first = Transcript()
    async for response in call:
        first.events.append(response.event)
        if response.event.WhichOneof("kind") == "completed":
            break
    assert first.text == "you said: first question"

    await outgoing.put(pb.ChatRequest(start=turn_input(SLOW, first.conversation)))
    second = Transcript()
    async for response in call:
        second.events.append(response.event)
        kind = response.event.WhichOneof("kind")
        if kind == "delta" and len(second.events) == 4:
            await outgoing.put(pb.ChatRequest(cancel_turn=response.event.turn))
        if kind == "completed":
            break
    await outgoing.put(None)
    async for _ in call:
        raise AssertionError("nothing follows once every turn ended")

    assert second.conversation == first.conversation
    assert second.completed.finish_reason == pb.FINISH_REASON_CANCELLED
    assert second.sequences == list(range(1, len(second.events) + 1))
    await cancelled_after(router_servers.config.log_path("triton"), second.turn)


async def test_a_turn_waiting_for_its_first_token_can_be_cancelled_by_name(
    chat: ChatServiceAsyncStub, router_servers: LocalStack, alice: Person
) -> None:
    slow = "take your time [scripted ttft_ms=60000]"
    stream = chat.StreamTurn(pb.StreamTurnRequest(input=turn_input(slow)), metadata=alice.md)
    transcript = Transcript()
    async for response in stream:
        transcript.events.append(response.event)
        break  # TurnStarted comes at once: the model has no fallback to change it
    assert transcript.events[0].WhichOneof("kind") == "started"

    reply = await chat.CancelTurn(pb.CancelTurnRequest(name=transcript.turn), metadata=alice.md)
    async for response in stream:
        transcript.events.append(response.event)

    assert reply.cancelled
    assert transcript.completed.finish_reason == pb.FINISH_REASON_CANCELLED
    assert transcript.text == ""
    assert await cancelled_after(router_servers.config.log_path("triton"), transcript.turn) == 0

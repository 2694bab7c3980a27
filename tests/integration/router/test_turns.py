"""The chat turn end to end on the real stack: stream, store, context, bill."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from parley.chat.v1 import chat_pb2 as pb
from parley.events.v1 import events_pb2
from parley.history.v1 import history_pb2 as hpb
from parley_core.stubs import chat_stub
from tests.integration.history.helpers import EventTap, Person, keyed
from tests.integration.router.helpers import Transcript, send, turn_input

if TYPE_CHECKING:
    from parley.chat.v1.chat_pb2_grpc import ChatServiceAsyncStub
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub

pytestmark = pytest.mark.integration


async def _path(history: HistoryServiceAsyncStub, person: Person, conversation: str) -> list[hpb.Message]:
    reply = await history.ListMessages(
        hpb.ListMessagesRequest(parent=conversation, page_size=500), metadata=person.md
    )
    return list(reply.messages)


async def test_a_turn_streams_started_deltas_and_one_completed_and_stores_both_messages(
    chat: ChatServiceAsyncStub, history: HistoryServiceAsyncStub, alice: Person
) -> None:
    transcript = await send(chat, alice, "What is a lighthouse?")

    kinds = [e.WhichOneof("kind") for e in transcript.events]
    assert kinds[0] == "started"
    assert kinds[-1] == "completed"
    assert set(kinds[1:-1]) == {"delta"}
    assert transcript.sequences == list(range(1, len(kinds) + 1))
    assert transcript.text == "you said: What is a lighthouse?"
    completed = transcript.completed
    assert completed.finish_reason == pb.FINISH_REASON_STOP
    assert completed.usage.output_tokens == 6  # the scripted model counts words
    assert completed.usage.input_tokens > 0
    # parley-scripted costs 1 and 2 USD per million tokens, rounded up to a micro-unit.
    expected = -(
        -(completed.usage.input_tokens * 1_000_000 + completed.usage.output_tokens * 2_000_000) // 1_000_000
    )
    assert completed.cost_estimate.micros == expected
    assert completed.cost_estimate.currency_code == "USD"
    started = transcript.started
    assert started.model == "models/parley-scripted"
    assert started.turn == transcript.turn

    stored = await _path(history, alice, transcript.conversation)
    assert [(m.author, m.text) for m in stored] == [
        (hpb.AUTHOR_USER, "What is a lighthouse?"),
        (hpb.AUTHOR_ASSISTANT, "you said: What is a lighthouse?"),
    ]
    user, answer = stored
    assert user.name == started.user_message
    assert answer.name == started.assistant_message
    assert answer.parent_message == user.name
    assert answer.state == hpb.MESSAGE_STATE_COMPLETE
    assert answer.usage.output_tokens == completed.usage.output_tokens
    assert answer.usage.input_tokens == completed.usage.input_tokens
    assert answer.turn == transcript.turn
    assert answer.model == "models/parley-scripted"


async def test_a_new_conversation_gets_a_title_from_its_first_turn(
    chat: ChatServiceAsyncStub, history: HistoryServiceAsyncStub, alice: Person
) -> None:
    transcript = await send(chat, alice, "Plan a weekend   in Lisbon\nwith kids")
    conversation = await history.GetConversation(
        hpb.GetConversationRequest(name=transcript.conversation), metadata=alice.md
    )
    assert conversation.conversation.title == "Plan a weekend in Lisbon with kids"
    assert conversation.conversation.model == "models/parley-scripted"


async def test_the_model_reads_the_earlier_turns_in_order(
    chat: ChatServiceAsyncStub, history: HistoryServiceAsyncStub, alice: Person
) -> None:
    first = await send(chat, alice, "My name is Ada.")
    second = await send(chat, alice, "I like lighthouses.", first.conversation)
    third = await send(chat, alice, "What do you know about me?", first.conversation)

    assert second.conversation == first.conversation == third.conversation
    assert third.text == "you said: My name is Ada. | I like lighthouses. | What do you know about me?"
    assert len(await _path(history, alice, first.conversation)) == 6


async def test_regenerate_answers_the_same_message_again_as_a_sibling(
    chat: ChatServiceAsyncStub, history: HistoryServiceAsyncStub, alice: Person
) -> None:
    first = await send(chat, alice, "Name a colour.")
    again = await send(
        chat, alice, "", first.conversation, regenerate=True, parent_message=first.started.user_message
    )

    assert again.started.user_message == first.started.user_message
    assert again.started.assistant_message != first.started.assistant_message
    assert again.text == "you said: Name a colour."
    path = await _path(history, alice, first.conversation)
    assert [m.name for m in path] == [first.started.user_message, again.started.assistant_message]
    assert path[1].sibling_count == 2


async def test_an_edit_branches_from_an_earlier_message_and_the_model_reads_that_branch(
    chat: ChatServiceAsyncStub, history: HistoryServiceAsyncStub, alice: Person
) -> None:
    first = await send(chat, alice, "I live in Paris.")
    await send(chat, alice, "I like rain.", first.conversation)
    # Edit the second question: a new user message under the first answer.
    edited = await send(
        chat, alice, "I like sun.", first.conversation, parent_message=first.started.assistant_message
    )

    assert edited.text == "you said: I live in Paris. | I like sun."
    path = await _path(history, alice, first.conversation)
    assert [m.text for m in path] == [
        "I live in Paris.",
        "you said: I live in Paris.",
        "I like sun.",
        "you said: I live in Paris. | I like sun.",
    ]


async def test_an_edit_of_the_first_message_starts_the_conversation_over_beside_it(
    chat: ChatServiceAsyncStub, history: HistoryServiceAsyncStub, alice: Person
) -> None:
    first = await send(chat, alice, "I live in Paris.")
    await send(chat, alice, "I like rain.", first.conversation)

    edited = await send(chat, alice, "I live in Rome.", first.conversation, branch_from_start=True)

    # The model read the new first message alone, nothing of the branch it replaces.
    assert edited.text == "you said: I live in Rome."
    path = await _path(history, alice, first.conversation)
    assert [m.text for m in path] == ["I live in Rome.", "you said: I live in Rome."]
    assert path[0].parent_message == ""
    assert (path[0].sibling_count, path[0].sibling_index) == (2, 1)


async def test_coalescing_sends_fewer_deltas_with_the_same_text_and_contiguous_sequences(
    start_router: Callable[..., Any], alice: Person
) -> None:
    router = await start_router(coalesce_ms=50)
    text = "stream fast [scripted tokens_per_second=400 reply_tokens=200]"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as channel:
        coalesced = await send(chat_stub(channel), alice, text)

    deltas = [e for e in coalesced.events if e.WhichOneof("kind") == "delta"]
    assert len(coalesced.text.split()) == 200
    assert len(deltas) < 100  # 200 tokens in about half a second, at most one delta per 50 ms
    assert coalesced.sequences == list(range(1, len(coalesced.events) + 1))
    assert coalesced.completed.usage.output_tokens == 200


async def test_a_client_that_reads_nothing_holds_up_neither_the_model_nor_other_clients(
    chat: ChatServiceAsyncStub, history: HistoryServiceAsyncStub, alice: Person, bob: Person
) -> None:
    # Alice's turn streams 500 tokens (about 85 KB of events: more than an HTTP/2 window) as
    # fast as the model makes them; she reads one event.
    flood = "pour it all out [scripted tokens_per_second=0 reply_tokens=500]"
    stalled = chat.StreamTurn(pb.StreamTurnRequest(input=turn_input(flood)), metadata=alice.md)
    read = await stalled.read()
    assert isinstance(read, pb.StreamTurnResponse)
    first = read
    assert first.event.WhichOneof("kind") == "started"

    # Bob is served meanwhile, and Alice's answer is generated and stored whole.
    assert (await send(chat, bob, "am I served?")).text == "you said: am I served?"
    conversation = first.event.turn.rsplit("/turns/", 1)[0]
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        stored = [m for m in await _path(history, alice, conversation) if m.author == hpb.AUTHOR_ASSISTANT]
        if stored:
            break
        assert asyncio.get_running_loop().time() < deadline, "alice's answer was never stored"
        await asyncio.sleep(0.2)
    assert stored[0].state == hpb.MESSAGE_STATE_COMPLETE
    assert stored[0].usage.output_tokens == 500
    # And she can still read all of it, in order.
    rest = Transcript([first.event])
    while isinstance(response := await stalled.read(), pb.StreamTurnResponse):
        rest.events.append(response.event)
    assert rest.sequences == list(range(1, len(rest.events) + 1))
    assert len(rest.text.split()) == 500


async def test_an_answer_history_refuses_ends_the_turn_as_failed_and_is_billed_all_the_same(
    chat: ChatServiceAsyncStub, alice: Person, usage_tap: EventTap
) -> None:
    # The test run's history keeps at most 4,000 characters a message; this answer is longer.
    transcript = await send(
        chat, alice, "extraordinarily magnificent adventures [scripted tokens_per_second=0 reply_tokens=1000]"
    )

    completed = transcript.completed
    assert completed.finish_reason == pb.FINISH_REASON_ERROR
    assert completed.error_reason == "ANSWER_NOT_STORED"
    assert completed.usage.output_tokens == 1000
    [published] = await usage_tap.take(keyed(alice.user_id), 1)
    event = events_pb2.TurnCompleted.FromString(published.data())
    assert (event.turn, event.usage.output_tokens, event.finish_reason) == (transcript.turn, 1000, "error")

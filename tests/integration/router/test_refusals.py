"""Turns the router refuses: each with its precise status, and nothing written."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.rpc import error_details_pb2

from parley.chat.v1 import chat_pb2 as pb
from parley.history.v1 import history_pb2 as hpb
from parley_core.errors import details_of
from parley_core.ratelimit import BucketSize
from parley_core.stubs import chat_stub
from svc_router.settings import TierLimits
from tests.integration.history.helpers import Person
from tests.integration.router.conftest import ROOMY
from tests.integration.router.helpers import collect, send, turn_input

if TYPE_CHECKING:
    from parley.chat.v1.chat_pb2_grpc import ChatServiceAsyncStub
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub

pytestmark = pytest.mark.integration


async def _stored(history: HistoryServiceAsyncStub, person: Person) -> dict[str, int]:
    """Each of the person's conversations with its number of messages."""
    conversations = await history.ListConversations(
        hpb.ListConversationsRequest(parent="users/me", page_size=100), metadata=person.md
    )
    counts: dict[str, int] = {}
    for conversation in conversations.conversations:
        messages = await history.ListMessages(
            hpb.ListMessagesRequest(parent=conversation.name, page_size=500, view=hpb.MESSAGE_VIEW_ALL),
            metadata=person.md,
        )
        counts[conversation.name] = len(messages.messages)
    return counts


async def _refused(chat: ChatServiceAsyncStub, person: Person, request: pb.TurnInput) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in chat.StreamTurn(pb.StreamTurnRequest(input=request), metadata=person.md):
            pass
    return caught.value


def _reason(error: grpc.aio.AioRpcError) -> str:
    [info] = [d for d in details_of(error) if isinstance(d, error_details_pb2.ErrorInfo)]
    return str(info.reason)


def _fields(error: grpc.aio.AioRpcError) -> list[str]:
    found = [d for d in details_of(error) if isinstance(d, error_details_pb2.BadRequest)]
    return [v.field for d in found for v in d.field_violations]


async def test_an_unknown_model_is_invalid_and_writes_nothing(
    chat: ChatServiceAsyncStub, history: HistoryServiceAsyncStub, alice: Person
) -> None:
    first = await send(chat, alice, "hello")
    before = await _stored(history, alice)

    for conversation in ("", first.conversation):
        error = await _refused(chat, alice, turn_input("hi", conversation, model="models/no-such-model"))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _fields(error) == ["input.model"]

    assert await _stored(history, alice) == before


async def test_another_users_conversation_is_refused_and_neither_user_gets_a_message(
    chat: ChatServiceAsyncStub, history: HistoryServiceAsyncStub, alice: Person, bob: Person
) -> None:
    hers = await send(chat, alice, "my secret plans")
    before_alice, before_bob = await _stored(history, alice), await _stored(history, bob)

    error = await _refused(chat, bob, turn_input("what did she say?", hers.conversation))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    # Nor may he start a branch of his own in it, or regenerate her answer.
    for attempt in (
        turn_input("a new root", hers.conversation, branch_from_start=True),
        turn_input("", hers.conversation, regenerate=True, parent_message=hers.started.user_message),
    ):
        refused = await _refused(chat, bob, attempt)
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    # The same conversation named as bob's own is simply not there for him.
    as_his = hers.conversation.replace(f"users/{alice.user_id}", f"users/{bob.user_id}")
    missing = await _refused(chat, bob, turn_input("and now?", as_his))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    # Nor can he read, resume or cancel her turn.
    for call in (
        chat.ResumeTurn(pb.ResumeTurnRequest(name=hers.turn), metadata=bob.md),
        chat.StreamTurn(
            pb.StreamTurnRequest(
                input=turn_input("x", hers.conversation, parent_message=hers.started.user_message)
            ),
            metadata=bob.md,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as cancel:
        await chat.CancelTurn(pb.CancelTurnRequest(name=hers.turn), metadata=bob.md)
    assert cancel.value.code() == grpc.StatusCode.PERMISSION_DENIED

    assert await _stored(history, alice) == before_alice
    assert await _stored(history, bob) == before_bob


async def test_an_oversized_message_is_invalid_and_writes_nothing(
    chat: ChatServiceAsyncStub, history: HistoryServiceAsyncStub, alice: Person
) -> None:
    first = await send(chat, alice, "hello")
    before = await _stored(history, alice)

    too_many_characters = "word " * 7_000  # 35,000 characters: over message_chars
    error = await _refused(chat, alice, turn_input(too_many_characters, first.conversation))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(error) == ["input.text"]
    # Under the character limit, but more of the model's tokens than its window holds.
    too_many_tokens = "a " * 2_100
    error = await _refused(chat, alice, turn_input(too_many_tokens, first.conversation))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(error) == ["input.text"]
    assert "too long for the model" in (error.details() or "")

    assert await _stored(history, alice) == before


@pytest.mark.parametrize(
    ("request_input", "field"),
    [
        (pb.TurnInput(text=""), "input.text"),
        (pb.TurnInput(text="   "), "input.text"),
        (pb.TurnInput(text="hi", idempotency_key="not-a-uuid"), "input.idempotency_key"),
        (
            pb.TurnInput(text="hi", parent_message="users/x/conversations/y/messages/z"),
            "input.parent_message",
        ),
        (pb.TurnInput(text="hi", conversation="conversations/1"), "input.conversation"),
        (pb.TurnInput(regenerate=True, text="hi"), "input.text"),
        (pb.TurnInput(text="hi", branch_from_start=True), "input.conversation"),
        (
            pb.TurnInput(
                text="hi",
                conversation="users/u/conversations/c",
                parent_message="users/u/conversations/c/messages/m",
                branch_from_start=True,
            ),
            "input.parent_message",
        ),
    ],
)
async def test_malformed_input_is_invalid_with_the_field_named(
    chat: ChatServiceAsyncStub, alice: Person, request_input: pb.TurnInput, field: str
) -> None:
    error = await _refused(chat, alice, request_input)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in _fields(error)


async def test_no_token_or_a_forged_one_is_unauthenticated(chat: ChatServiceAsyncStub, alice: Person) -> None:
    for metadata in ((), (("authorization", f"Bearer {alice.token[:-4]}AAAA"),)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in chat.StreamTurn(pb.StreamTurnRequest(input=turn_input("hi")), metadata=metadata):
                pass
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_exhausted_turn_rate_is_refused_before_anything_is_written(
    start_router: Callable[..., Any], history: HistoryServiceAsyncStub, alice: Person
) -> None:
    tight = TierLimits(turns=BucketSize(capacity=2, refill_per_s=1 / 3600), tokens=ROOMY.tokens)
    router = await start_router(tiers={"free": tight})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as channel:
        chat = chat_stub(channel)
        first = await send(chat, alice, "one")
        await send(chat, alice, "two", first.conversation)
        before = await _stored(history, alice)

        for conversation in (first.conversation, ""):
            error = await _refused(chat, alice, turn_input("three", conversation))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert _reason(error) == "TURN_RATE_LIMITED"
            [retry] = [d for d in details_of(error) if isinstance(d, error_details_pb2.RetryInfo)]
            assert retry.retry_delay.seconds > 3000  # one turn an hour refills

    assert await _stored(history, alice) == before


async def test_a_used_up_token_quota_is_refused_before_anything_is_written(
    start_router: Callable[..., Any], history: HistoryServiceAsyncStub, bob: Person
) -> None:
    # 30 tokens a day: the first turn is admitted, uses more than that, and leaves a debt.
    tight = TierLimits(turns=ROOMY.turns, tokens=BucketSize(capacity=30, refill_per_s=30 / 86_400))
    router = await start_router(tiers={"free": tight})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as channel:
        chat = chat_stub(channel)
        first = await send(chat, bob, "tell me a long story [scripted reply_tokens=40]")
        assert first.completed.usage.output_tokens == 40
        before = await _stored(history, bob)

        error = await _refused(chat, bob, turn_input("and another", first.conversation))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _reason(error) == "TOKEN_QUOTA_EXCEEDED"

    assert await _stored(history, bob) == before


async def test_a_users_token_cannot_carry_another_users_token_to_act_as_them(
    chat: ChatServiceAsyncStub, history: HistoryServiceAsyncStub, alice: Person, bob: Person
) -> None:
    # The header a service uses to act for a user, sent by a user: never obeyed. The
    # router takes no service calls, so it serves bob as bob.
    before = await _stored(history, alice)
    spoofed = (*bob.md, ("x-parley-user-token", alice.token))
    transcript = await collect(
        chat.StreamTurn(pb.StreamTurnRequest(input=turn_input("as alice")), metadata=spoofed)
    )

    assert transcript.turn.startswith(f"users/{bob.user_id}/")
    assert await _stored(history, alice) == before

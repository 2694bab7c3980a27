"""Budgets at admission: a turn reserves its largest possible cost on its user's, API key's and
tier's monthly budgets before anything is written. A hard limit refuses it, a soft limit warns
in TurnStarted, a turn that ends without a usage event gives its reservation back, and the
usage event says whether its counts are the model's or the router's estimate.

parley-scripted's largest cost (model_repo/catalog.toml): a 1,024-token prompt at 1 USD and a
1,024-token answer at 2 USD per million tokens, 3,072 micro-USD.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.rpc import error_details_pb2

from parley.chat.v1 import chat_pb2 as pb
from parley.common.v1 import common_pb2
from parley.events.v1 import events_pb2
from parley.history.v1 import history_pb2 as hpb
from parley.session.v1 import session_pb2
from parley_core.auth import Principal
from parley_core.budgets import BudgetLimits, BudgetScope, BudgetState, month_of
from parley_core.errors import details_of
from parley_core.stubs import chat_stub, session_stub
from parley_stack.testing import LocalStack
from svc_router.app import RouterApp
from svc_router.budget import next_month
from svc_session.app import SessionApp
from tests.integration.history.conftest import PeopleFactory
from tests.integration.history.helpers import EventTap, Person, keyed, new_conversation
from tests.integration.router.conftest import write_catalog
from tests.integration.router.helpers import Transcript, collect, send, turn_input
from tests.integration.session.helpers import PASSWORD, register_verified

if TYPE_CHECKING:
    from parley.chat.v1.chat_pb2_grpc import ChatServiceAsyncStub
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub

pytestmark = pytest.mark.integration

#: What one parley-scripted turn reserves.
SCRIPTED_COST = 3072
#: A turn the scripted model answers slowly: 20 words a second, 400 of them.
SLOW = "tell me everything [scripted tokens_per_second=20 reply_tokens=400]"


@pytest.fixture
def budgets(router_app: RouterApp) -> BudgetState:
    return BudgetState(router_app.data.redis)


def _month() -> str:
    return month_of(datetime.now(UTC))


async def _reserved(budgets: BudgetState, scope: BudgetScope) -> int:
    return (await budgets.standing(scope, _month())).reserved


async def _held_or_settled(budgets: BudgetState, scope: BudgetScope, ended: Transcript) -> None:
    """A turn that wrote its usage event keeps its reservation until a ledger settles it; then
    the reservation is gone and the turn's cost is spent (a ledger may run in this session)."""
    standing = await budgets.standing(scope, _month())
    settled = (0, ended.completed.cost_estimate.micros)
    assert (standing.reserved, standing.spent) in ((SCRIPTED_COST, 0), settled)


async def _refused(chat: ChatServiceAsyncStub, person: Person, request: pb.TurnInput) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in chat.StreamTurn(pb.StreamTurnRequest(input=request), metadata=person.md):
            pass
    return caught.value


def _info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    [info] = [d for d in details_of(error) if isinstance(d, error_details_pb2.ErrorInfo)]
    return info


def _retry_s(error: grpc.aio.AioRpcError) -> float:
    [retry] = [d for d in details_of(error) if isinstance(d, error_details_pb2.RetryInfo)]
    return float(retry.retry_delay.ToNanoseconds() / 1e9)


def _assert_budget_exhausted(error: grpc.aio.AioRpcError, budget: str, hard: int, committed: int) -> None:
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = _info(error)
    assert info.reason == "BUDGET_EXHAUSTED"
    assert dict(info.metadata) == {
        "budget": budget,
        "hard_limit_micros": str(hard),
        "committed_micros": str(committed),
        "currency": "USD",
    }
    now = datetime.now(UTC)
    assert abs(_retry_s(error) - (next_month(now) - now).total_seconds()) < 60


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


async def _read_until_deltas(chat: ChatServiceAsyncStub, person: Person, text: str, deltas: int) -> Any:
    """Start a turn and read it until `deltas` deltas came; the open stream and what it read."""
    stream = chat.StreamTurn(pb.StreamTurnRequest(input=turn_input(text)), metadata=person.md)
    transcript = Transcript()
    async for response in stream:
        transcript.events.append(response.event)
        if sum(1 for e in transcript.events if e.WhichOneof("kind") == "delta") >= deltas:
            break
    return stream, transcript


async def _cancel_and_finish(
    chat: ChatServiceAsyncStub, person: Person, stream: Any, transcript: Transcript
) -> None:
    await chat.CancelTurn(pb.CancelTurnRequest(name=transcript.turn), metadata=person.md)
    async for response in stream:
        transcript.events.append(response.event)


async def test_a_hard_limit_below_a_turns_largest_cost_refuses_it_and_writes_nothing(
    chat: ChatServiceAsyncStub, history: HistoryServiceAsyncStub, budgets: BudgetState, people: PeopleFactory
) -> None:
    person = await people()
    first = await new_conversation(history, person)
    before = await _stored(history, person)
    mine = BudgetScope.user(person.user_id)
    await budgets.set_limits(mine, BudgetLimits(hard=SCRIPTED_COST - 1))

    for conversation in (first.name, ""):
        error = await _refused(chat, person, turn_input("one more", conversation))
        _assert_budget_exhausted(error, f"users/{person.user_id}/budget", SCRIPTED_COST - 1, 0)

    assert await _stored(history, person) == before
    assert await _reserved(budgets, mine) == 0
    # A limit the turn's largest cost just fits admits it, and holds that cost.
    await budgets.set_limits(mine, BudgetLimits(hard=SCRIPTED_COST))
    admitted = await send(chat, person, "now it fits", first.name)
    assert admitted.completed.finish_reason == pb.FINISH_REASON_STOP
    await _held_or_settled(budgets, mine, admitted)


async def _key_token(session_app: SessionApp, person: Person) -> tuple[Person, str]:
    """The person with the token of a new chat key of theirs, and the key's id."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{session_app.port}") as channel:
        stub = session_stub(channel)
        created = await stub.CreateApiKey(
            session_pb2.CreateApiKeyRequest(
                parent="users/me",
                api_key=session_pb2.ApiKey(display_name="budgeted", scopes=["chat"]),
                request_id=str(uuid.uuid4()),
            ),
            metadata=person.md,
        )
        login = await stub.Login(session_pb2.LoginRequest(api_key=created.key))
    keyed_person = Person(person.user_id, login.credentials.access_token, person.router_token)
    return keyed_person, created.api_key.name.rsplit("/", 1)[1]


async def test_an_api_keys_budget_refuses_the_keys_turns_and_not_its_owners(
    chat: ChatServiceAsyncStub,
    history: HistoryServiceAsyncStub,
    budgets: BudgetState,
    people: PeopleFactory,
    session_app: SessionApp,
) -> None:
    person = await people()
    partner, key_id = await _key_token(session_app, person)
    await budgets.set_limits(BudgetScope.api_key(person.user_id, key_id), BudgetLimits(hard=1000))

    error = await _refused(chat, partner, turn_input("from the partner"))

    _assert_budget_exhausted(error, f"users/{person.user_id}/apiKeys/{key_id}/budget", 1000, 0)
    assert await _stored(history, person) == {}
    own = await send(chat, person, "from the owner")
    assert own.completed.finish_reason == pb.FINISH_REASON_STOP


async def _on_tier(
    session_app: SessionApp, mailbox: Path, router: RouterApp, person: Person, tier: str
) -> None:
    """Move the person to `tier` (as an admin does), and wait until the router sees it."""
    email = f"budget-admin-{uuid.uuid4().hex[:10]}@parley.test"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{session_app.port}") as channel:
        stub = session_stub(channel)
        await register_verified(stub, mailbox, email)
        await session_app.accounts.grant_admin(email)
        login = await stub.Login(
            session_pb2.LoginRequest(password=session_pb2.PasswordCredential(email=email, password=PASSWORD))
        )
        await stub.UpdateUser(
            session_pb2.UpdateUserRequest(
                user=session_pb2.User(name=person.name, tier=tier), update_mask=FieldMask(paths=["tier"])
            ),
            metadata=(("authorization", f"Bearer {login.credentials.access_token}"),),
        )
    principal = Principal(user_id=person.user_id, role="user", tier="free", scopes=frozenset({"chat"}))
    deadline = time.monotonic() + 10
    while (await router.revocations.check(principal)).tier != tier:
        assert time.monotonic() < deadline, f"the router never saw the tier {tier!r}"
        await asyncio.sleep(0.05)


async def test_a_tiers_budget_refuses_the_turns_of_its_users(
    chat: ChatServiceAsyncStub,
    history: HistoryServiceAsyncStub,
    budgets: BudgetState,
    people: PeopleFactory,
    session_app: SessionApp,
    mailbox: Path,
    router_app: RouterApp,
) -> None:
    # "enterprise" is a tier of svc_session that no other router test uses.
    person = await people()
    await _on_tier(session_app, mailbox, router_app, person, "enterprise")
    tier = BudgetScope.tier("enterprise")
    await budgets.set_limits(tier, BudgetLimits(hard=1000))
    try:
        error = await _refused(chat, person, turn_input("on the big plan"))
    finally:
        await budgets.set_limits(tier, BudgetLimits())

    _assert_budget_exhausted(error, "tiers/enterprise/budget", 1000, 0)
    assert await _stored(history, person) == {}


async def test_a_soft_limit_warns_in_turn_started_and_the_turn_goes_on(
    chat: ChatServiceAsyncStub, budgets: BudgetState, people: PeopleFactory
) -> None:
    person = await people()
    await budgets.set_limits(BudgetScope.user(person.user_id), BudgetLimits(soft=1000))

    transcript = await send(chat, person, "am I spending much?")

    expected = pb.BudgetWarning(
        budget=f"users/{person.user_id}/budget",
        soft_limit=common_pb2.Money(currency_code="USD", micros=1000),
        committed=common_pb2.Money(currency_code="USD", micros=SCRIPTED_COST),
    )
    assert list(transcript.started.budget_warnings) == [expected]
    assert transcript.completed.finish_reason == pb.FINISH_REASON_STOP
    assert transcript.text == "you said: am I spending much?"
    # A reader that replays the turn from its log gets the same warning.
    replayed = await collect(chat.ResumeTurn(pb.ResumeTurnRequest(name=transcript.turn), metadata=person.md))
    assert list(replayed.started.budget_warnings) == [expected]


async def test_a_running_turn_holds_its_largest_cost_and_the_ledger_is_left_to_settle_it(
    chat: ChatServiceAsyncStub, budgets: BudgetState, people: PeopleFactory
) -> None:
    person = await people()
    mine = BudgetScope.user(person.user_id)
    await budgets.set_limits(mine, BudgetLimits(hard=2 * SCRIPTED_COST - 1))

    stream, transcript = await _read_until_deltas(chat, person, SLOW, 3)
    assert await _reserved(budgets, mine) == SCRIPTED_COST
    # A second turn at once would take the budget past its limit with the first one's hold.
    error = await _refused(chat, person, turn_input("and at the same time"))
    _assert_budget_exhausted(error, mine.name, 2 * SCRIPTED_COST - 1, SCRIPTED_COST)
    await _cancel_and_finish(chat, person, stream, transcript)

    assert transcript.completed.finish_reason == pb.FINISH_REASON_CANCELLED
    # Its usage event was written: the ledger settles the reservation when it prices it.
    await _held_or_settled(budgets, mine, transcript)


async def test_a_turn_refused_after_its_reservation_gives_it_back(
    chat: ChatServiceAsyncStub, history: HistoryServiceAsyncStub, budgets: BudgetState, people: PeopleFactory
) -> None:
    person = await people()
    conversation = await new_conversation(history, person)
    mine = BudgetScope.user(person.user_id)
    await budgets.set_limits(mine, BudgetLimits(hard=SCRIPTED_COST))  # room for one turn

    # History refuses the user message (its parent is no message of the conversation) once
    # the turn has reserved.
    missing_parent = f"{conversation.name}/messages/{uuid.uuid4()}"
    error = await _refused(chat, person, turn_input("hi", conversation.name, parent_message=missing_parent))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

    assert await _reserved(budgets, mine) == 0
    admitted = await send(chat, person, "hi again", conversation.name)
    assert admitted.completed.finish_reason == pb.FINISH_REASON_STOP


async def test_without_the_budget_state_every_turn_is_unavailable_until_it_is_rebuilt(
    chat: ChatServiceAsyncStub,
    history: HistoryServiceAsyncStub,
    budgets: BudgetState,
    router_app: RouterApp,
    alice: Person,
) -> None:
    # A Redis that lost its data has no ready marker until the ledger has rebuilt the state.
    await router_app.data.redis.delete(BudgetState.ready_key())
    try:
        error = await _refused(chat, alice, turn_input("anyone there?"))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert _info(error).reason == "BUDGET_STATE_UNAVAILABLE"
        assert _retry_s(error) == 1.0
        assert await _stored(history, alice) == {}
    finally:
        await budgets.mark_ready("router tests")
    assert (await send(chat, alice, "and now?")).completed.finish_reason == pb.FINISH_REASON_STOP


async def _usage_event(tap: EventTap, person: Person, turn: str) -> events_pb2.TurnCompleted:
    [published] = await tap.take(keyed(person.user_id), 1)
    event = events_pb2.TurnCompleted.FromString(published.data())
    assert event.turn == turn
    return event


async def test_a_cancelled_turns_usage_event_carries_the_routers_estimate_and_no_usage(
    chat: ChatServiceAsyncStub, alice: Person, usage_tap: EventTap
) -> None:
    stream, transcript = await _read_until_deltas(chat, alice, SLOW, 5)
    await _cancel_and_finish(chat, alice, stream, transcript)

    event = await _usage_event(usage_tap, alice, transcript.turn)
    assert event.finish_reason == "cancelled"
    assert not event.HasField("usage")
    streamed = len(transcript.text.split())
    completed = transcript.completed
    assert completed.usage.input_tokens > 0
    assert (event.estimated_usage.input_tokens, event.estimated_usage.output_tokens) == (
        completed.usage.input_tokens,
        streamed,
    )


@pytest.mark.parametrize("model", ["models/parley-scripted", "models/smollm2"])
async def test_a_completed_turns_usage_event_carries_the_models_usage_and_no_estimate(
    chat: ChatServiceAsyncStub, alice: Person, usage_tap: EventTap, model: str
) -> None:
    transcript = await send(chat, alice, "Say hello in one word.", model=model)

    event = await _usage_event(usage_tap, alice, transcript.turn)
    assert event.finish_reason in ("stop", "max_tokens")
    assert not event.HasField("estimated_usage")
    assert event.HasField("usage")
    assert event.usage.input_tokens > 0
    assert (event.usage.input_tokens, event.usage.output_tokens) == (
        transcript.completed.usage.input_tokens,
        transcript.completed.usage.output_tokens,
    )


CATALOG = """
schema_version = 2
default_model = "scripted"

[[models]]
# parley-scripted, falling back to a dearer model with a larger window.
name = "scripted"
display_name = "Scripted"
context_window = 2048
max_output_tokens = 1024
fallbacks = ["dear"]
[[models.backends]]
kind = "triton"
model = "parley-scripted"
[models.tokenizer]
kind = "words"
[models.price]
currency = "USD"
input_per_million_tokens = 1_000_000
output_per_million_tokens = 2_000_000

[[models]]
name = "dear"
display_name = "Dear"
context_window = 4096
max_output_tokens = 512
[[models.backends]]
kind = "triton"
model = "parley-scripted"
[models.price]
currency = "USD"
input_per_million_tokens = 10_000_000
output_per_million_tokens = 20_000_000

[[models]]
# smollm2 on llama-cpp-python's server, which streams no usage.
name = "llama-only"
display_name = "Llama only"
context_window = 2048
max_output_tokens = 16
[[models.backends]]
kind = "openai"
endpoint = "llama"
model = "smollm2"
parameters = { temperature = 0 }
[models.tokenizer]
kind = "triton"
model = "smollm2-tokens"
[models.price]
currency = "USD"
input_per_million_tokens = 1_000_000
output_per_million_tokens = 1_000_000
"""


async def test_a_turn_reserves_for_the_dearest_model_it_may_fall_back_to(
    start_router: Callable[..., Any], budgets: BudgetState, people: PeopleFactory, tmp_path: Path
) -> None:
    router = await start_router(catalog_path=write_catalog(tmp_path, CATALOG))
    person = await people()
    await budgets.set_limits(BudgetScope.user(person.user_id), BudgetLimits(soft=1))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as channel:
        transcript = await send(chat_stub(channel), person, "who answers?", model="models/scripted")

    # dear: a 3,584-token prompt at 10 USD and a 512-token answer at 20 USD per million.
    [warning] = transcript.started.budget_warnings
    assert warning.committed == common_pb2.Money(currency_code="USD", micros=3584 * 10 + 512 * 20)
    assert transcript.started.model == "models/scripted"
    assert transcript.completed.finish_reason == pb.FINISH_REASON_STOP


async def test_a_server_that_streams_no_usage_is_billed_the_routers_estimate(
    start_router: Callable[..., Any],
    router_servers: LocalStack,
    people: PeopleFactory,
    usage_tap: EventTap,
    tmp_path: Path,
) -> None:
    router_servers.ensure("llama")
    router = await start_router(catalog_path=write_catalog(tmp_path, CATALOG))
    person = await people()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as channel:
        transcript = await send(chat_stub(channel), person, "Say hello.", model="models/llama-only")

    event = await _usage_event(usage_tap, person, transcript.turn)
    assert event.finish_reason in ("stop", "max_tokens")
    assert not event.HasField("usage")
    completed = transcript.completed
    assert completed.usage.input_tokens > 0
    assert 0 < completed.usage.output_tokens <= 16
    assert (event.estimated_usage.input_tokens, event.estimated_usage.output_tokens) == (
        completed.usage.input_tokens,
        completed.usage.output_tokens,
    )

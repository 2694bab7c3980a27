"""Budgets: what is spent and reserved, the settling of reservations by priced events, the
expiry of reservations never settled, and the Redis state rebuilt from the ledger."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pulsar
import pytest
from redis.asyncio import Redis

from parley.common.v1 import common_pb2
from parley.ledger.v1 import ledger_pb2 as pb
from parley_core.budgets import BudgetLimits, BudgetScope, BudgetState, BudgetStateUnavailableError, month_of
from svc_ledger.app import LedgerApp
from tests.integration.history.helpers import Person
from tests.integration.ledger.conftest import admin_md
from tests.integration.ledger.helpers import Usage, cost, eventually, publish

if TYPE_CHECKING:
    from parley.ledger.v1.ledger_pb2_grpc import LedgerServiceAsyncStub


def usd(micros: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code="USD", micros=micros)


@pytest.fixture
def state(ledger_app: LedgerApp) -> BudgetState:
    return BudgetState(ledger_app.data.redis)


def scripted(user: Person, inputs: int, outputs: int, **fields: object) -> Usage:
    """A usage of parley-scripted (1 and 2 USD per million tokens: round sums)."""
    return Usage(user.user_id, "parley-scripted", inputs, outputs, datetime.now(UTC), **fields)  # type: ignore[arg-type]


async def _budget(
    ledger: LedgerServiceAsyncStub, name: str, admin: tuple[tuple[str, str], ...]
) -> pb.GetBudgetResponse:
    return await ledger.GetBudget(pb.GetBudgetRequest(name=name), metadata=admin)


async def test_a_budget_shows_spent_and_reserved_and_where_it_stands(
    ledger: LedgerServiceAsyncStub,
    state: BudgetState,
    producer: pulsar.Producer,
    alice: Person,
    admin_token: str,
) -> None:
    admin = admin_md(admin_token)
    name = f"{alice.name}/budget"
    await ledger.SetBudget(
        pb.SetBudgetRequest(budget=pb.Budget(name=name, soft_limit=usd(100), hard_limit=usd(150))),
        metadata=admin,
    )
    month = month_of(datetime.now(UTC))
    user = BudgetScope.user(alice.user_id)

    reserved = await state.reserve("turn-a", 60, [user], month=month, hold_s=60)
    assert reserved.refusal is None
    assert reserved.warnings == ()
    got = await _budget(ledger, "users/me/budget", alice.md)
    assert (got.spent.micros, got.reserved.micros, got.state) == (0, 60, pb.BUDGET_STATE_OK)
    assert got.budget.hard_limit.micros == 150

    # The turn's event comes: 30 micro-units spent, its reservation released, both at once.
    event = scripted(alice, 10, 10).event()
    event.turn = f"{alice.name}/conversations/c1/turns/turn-a"
    publish(producer, [event])
    got = await eventually(
        lambda: _budget(ledger, "users/me/budget", alice.md), lambda b: b.spent.micros == 30
    )
    assert got.reserved.micros == 0
    assert (await state.standing(user, month)).spent == 30

    # Reservations past the soft limit warn; past the hard limit they are refused.
    second = await state.reserve("turn-b", 80, [user], month=month, hold_s=60)
    assert [w.soft_limit for w in second.warnings] == [100]
    assert second.warnings[0].committed == 110
    assert (await _budget(ledger, "users/me/budget", alice.md)).state == pb.BUDGET_STATE_WARNING
    third = await state.reserve("turn-c", 41, [user], month=month, hold_s=60)
    assert third.refusal is not None
    assert (third.refusal.hard_limit, third.refusal.committed) == (150, 110)
    fits = await state.reserve("turn-d", 40, [user], month=month, hold_s=60)
    assert fits.refusal is None
    assert (await _budget(ledger, "users/me/budget", alice.md)).state == pb.BUDGET_STATE_EXHAUSTED
    await state.release(["turn-b", "turn-d"])
    assert (await _budget(ledger, "users/me/budget", alice.md)).reserved.micros == 0


async def test_api_key_and_tier_budgets_count_their_own_turns(
    ledger: LedgerServiceAsyncStub, producer: pulsar.Producer, alice: Person, bob: Person, admin_token: str
) -> None:
    admin = admin_md(admin_token)
    tier = f"t{secrets.token_hex(4)}"
    publish(
        producer,
        [
            scripted(alice, 10, 0, tier=tier, api_key="k1").event(),
            scripted(alice, 20, 0, tier=tier).event(),
            scripted(bob, 40, 0, tier=tier, api_key="k1").event(),
            scripted(bob, 80, 0).event(),  # another tier
        ],
    )

    await eventually(lambda: _budget(ledger, f"tiers/{tier}/budget", admin), lambda b: b.spent.micros == 70)
    key = await _budget(ledger, "users/me/apiKeys/k1/budget", alice.md)
    assert key.spent.micros == 10
    assert (await _budget(ledger, "users/me/budget", bob.md)).spent.micros == 120
    assert (await _budget(ledger, "users/me/apiKeys/k1/budget", bob.md)).spent.micros == 40


async def test_a_reservation_never_settled_expires(state: BudgetState, ledger_app: LedgerApp) -> None:
    user = BudgetScope.user(uuid.uuid4().hex)
    await state.set_limits(user, BudgetLimits(hard=100))
    month = month_of(datetime.now(UTC))

    await state.reserve("lost-turn", 90, [user], month=month, hold_s=0.3)
    assert (await state.reserve("next-turn", 20, [user], month=month, hold_s=60)).refusal is not None
    await asyncio.sleep(0.5)

    assert (await state.standing(user, month)).reserved == 0
    assert (await state.reserve("next-turn", 20, [user], month=month, hold_s=60)).refusal is None
    await state.release(["next-turn"])


async def test_a_redis_that_lost_the_budget_state_is_rebuilt_from_the_ledger(
    ledger: LedgerServiceAsyncStub,
    ledger_app: LedgerApp,
    state: BudgetState,
    producer: pulsar.Producer,
    alice: Person,
    admin_token: str,
) -> None:
    admin = admin_md(admin_token)
    publish(producer, [scripted(alice, 100, 50).event(), scripted(alice, 7, 0, api_key="k9").event()])
    spent = cost(100, 50, 1_000_000, 2_000_000) + 7
    await eventually(lambda: _budget(ledger, "users/me/budget", alice.md), lambda b: b.spent.micros == spent)
    await ledger.SetBudget(
        pb.SetBudgetRequest(budget=pb.Budget(name=f"{alice.name}/budget", hard_limit=usd(500))),
        metadata=admin,
    )
    user = BudgetScope.user(alice.user_id)
    month = month_of(datetime.now(UTC))
    rebuilds = ledger_app.budgets.rebuilds

    await _forget_budget_state(ledger_app.data.redis)
    with pytest.raises(BudgetStateUnavailableError):
        await state.reserve("turn-x", 1, [user], month=month, hold_s=60)

    await eventually(state.is_ready, bool, timeout_s=10)
    assert ledger_app.budgets.rebuilds == rebuilds + 1
    standing = await state.standing(user, month)
    assert standing.spent == spent
    assert standing.limits.hard == 500
    assert (await state.standing(BudgetScope.api_key(alice.user_id, "k9"), month)).spent == 7
    refused = await state.reserve("turn-x", 500 - spent + 1, [user], month=month, hold_s=60)
    assert refused.refusal is not None


async def _forget_budget_state(redis: Redis) -> None:
    """What a Redis restarted without its data looks like to the budgets: every key gone at
    once (one DEL), so the ledger's rebuild cannot start half-way through the deleting."""
    keys = [key async for key in redis.scan_iter(match="parley:budget:*", count=1000)]
    await redis.delete(*keys)

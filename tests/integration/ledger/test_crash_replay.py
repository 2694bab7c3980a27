"""svc_ledger killed mid-stream and fed every event twice still bills each event exactly once.

The ledgers run as real processes (`python -m svc_ledger`) on the session stack's Cassandra
and Redis and on an Apache Pulsar of this module's own: after a Key_Shared consumer dies,
pulsar-lite does not redeliver every unacknowledged message of a key (docs/stack/pulsar.md),
and the ledger relies on exactly that. What each test expects is computed from the events
it made, with the catalog's prices and ADR 0013's rounding (helpers.cost), not with the
ledger's code; only the reading goes through svc_ledger's store and reports.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pulsar
import pytest
import redis.asyncio

from parley.ledger.v1 import ledger_pb2 as pb
from parley_core.budgets import BudgetScope, BudgetState
from parley_core.cassandra import connect
from parley_core.catalog import load_catalog
from parley_core.events import USAGE, topic_url
from parley_stack.testing import LocalStack
from svc_ledger.reports import Entry, Reports
from svc_ledger.servicer import _DIMENSIONS
from svc_ledger.store import ZERO, Amounts, LedgerStore, add
from tests.integration.ledger.helpers import (
    LedgerProcess,
    Usage,
    cost,
    eventually,
    publish,
    relay_producer,
    subscription_stats,
)

pytestmark = pytest.mark.integration

CATALOG = load_catalog(Path(__file__).resolve().parents[3] / "model_repo" / "catalog.toml")
MODELS = ("smollm2", "parley-tiny", "parley-scripted")


@dataclass
class Bench:
    """Everything one test's ledgers use, and the test's own view of it."""

    servers: LocalStack
    broker: LocalStack
    directory: Path
    keyspace: str = field(default_factory=lambda: f"ledger_crash_{secrets.token_hex(4)}")
    subscription: str = field(default_factory=lambda: f"ledger-{uuid.uuid4().hex[:12]}")
    ledgers: list[LedgerProcess] = field(default_factory=list)
    started: int = 0

    @property
    def pulsar_url(self) -> str:
        running = self.broker.stack.table.running("pulsar")
        assert running is not None
        return running.endpoints["pulsar"]

    @property
    def admin_url(self) -> str:
        running = self.broker.stack.table.running("pulsar")
        assert running is not None
        return running.endpoints["http"]

    @property
    def redis_url(self) -> str:
        host, port = self.servers.endpoint("redis", "redis")
        return f"redis://{host}:{port}/0"

    def settings(self) -> dict[str, str]:
        cql_host, cql_port = self.servers.endpoint("cassandra-1", "cql")
        return {
            "PARLEY_LEDGER_CASSANDRA_HOSTS": json.dumps([cql_host]),
            "PARLEY_LEDGER_CASSANDRA_PORT": str(cql_port),
            "PARLEY_LEDGER_REDIS_URL": self.redis_url,
            "PARLEY_LEDGER_PULSAR_URL": self.pulsar_url,
            "PARLEY_LEDGER_KEYSPACE": self.keyspace,
            "PARLEY_LEDGER_SUBSCRIPTION": self.subscription,
            "PARLEY_LEDGER_SUBSCRIBE_FROM": "earliest",
            "PARLEY_LEDGER_PORT": "0",
            # 0: the process picks a free port and names it in its "serving" log line.
            "PARLEY_LEDGER_METRICS_PORT": "0",
            # Nothing here calls the ledger's gRPC API, so nothing fetches the keys.
            "PARLEY_LEDGER_JWKS_URL": "http://127.0.0.1:9/.well-known/jwks.json",
            "PARLEY_LEDGER_LOG_FORMAT": "json",
            "PARLEY_LEDGER_SHUTDOWN_GRACE_S": "1",
            "PARLEY_LEDGER_RETRY_BASE_S": "0.2",
            "PARLEY_LEDGER_RETRY_MAX_S": "2",
        }

    async def start_ledger(self) -> LedgerProcess:
        self.started += 1
        ledger = await LedgerProcess.start(self.settings(), self.directory / f"ledger-{self.started}.log")
        self.ledgers.append(ledger)
        return ledger

    async def stats(self) -> dict[str, Any]:
        return await subscription_stats(self.admin_url, self.subscription)


@pytest.fixture
async def bench(
    history_servers: LocalStack, apache_pulsar: LocalStack, tmp_path: Path
) -> AsyncIterator[Bench]:
    """A fresh keyspace and subscription; its ledgers killed, the subscription and keyspace
    dropped at the end."""
    made = Bench(history_servers, apache_pulsar, tmp_path)
    try:
        yield made
    finally:
        for ledger in made.ledgers:
            await ledger.kill()
        topic = topic_url(USAGE).removeprefix("persistent://")
        async with httpx.AsyncClient(timeout=30.0) as http:
            await http.delete(
                f"{made.admin_url}/admin/v2/persistent/{topic}/subscription/{made.subscription}",
                params={"force": "true"},
            )
        host, port = made.servers.endpoint("cassandra-1", "cql")
        cluster, session = await asyncio.to_thread(connect, [host], port)
        try:
            await asyncio.to_thread(session.execute, f"DROP KEYSPACE IF EXISTS {made.keyspace}")
        finally:
            await asyncio.to_thread(cluster.shutdown)


@dataclass
class Reader:
    """The ledger's tables and the budgets' Redis state, read through svc_ledger's own code."""

    store: LedgerStore
    reports: Reports
    budgets: BudgetState


@pytest.fixture
async def open_reader(bench: Bench) -> AsyncIterator[Callable[[], Reader]]:
    """Call once the keyspace exists (a ledger has migrated it)."""
    host, port = bench.servers.endpoint("cassandra-1", "cql")
    cluster, session = await asyncio.to_thread(connect, [host], port)
    redis_client = redis.asyncio.Redis.from_url(bench.redis_url)

    def make() -> Reader:
        store = LedgerStore(session, bench.keyspace)
        return Reader(store, Reports(store), BudgetState(redis_client))

    try:
        yield make
    finally:
        await redis_client.aclose()
        await asyncio.to_thread(cluster.shutdown)


# -- the events and what they must add up to -------------------------------------------------


@dataclass(frozen=True)
class Period:
    """Two whole calendar months, before the current one."""

    start: datetime
    end: datetime

    @classmethod
    def last_two_months(cls) -> Period:
        this_month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        previous = (this_month - timedelta(days=1)).replace(day=1)
        return cls((previous - timedelta(days=1)).replace(day=1), this_month)


def usages(rng: random.Random, count: int, users: int, period: Period, tiers: Sequence[str]) -> list[Usage]:
    """`count` usage events of `users` random users over the period: the three catalog models,
    two tiers (a few events in the user's other tier), a third of the users with API keys,
    a tenth of the events estimated, some cancelled or failed."""
    people = []
    for _ in range(users):
        keys = [f"k{rng.getrandbits(40):010x}" for _ in range(rng.choice((0, 0, 1, 2)))]
        people.append((f"{rng.getrandbits(128):032x}", rng.randrange(len(tiers)), keys))
    span_ms = int((period.end - period.start).total_seconds() * 1000)
    made = []
    for _ in range(count):
        user, tier, keys = rng.choice(people)
        if rng.random() < 0.05:
            tier = 1 - tier
        made.append(
            Usage(
                user,
                rng.choice(MODELS),
                rng.randrange(0, 4000),
                rng.randrange(0, 1024),
                period.start + timedelta(milliseconds=rng.randrange(span_ms)),
                tier=tiers[tier],
                api_key=rng.choice(keys) if keys and rng.random() < 0.6 else "",
                finish_reason=rng.choices(("stop", "max_tokens", "cancelled", "error"), (80, 5, 10, 5))[0],
                estimated=rng.random() < 0.1,
                event_id=f"{rng.getrandbits(128):032x}",
            )
        )
    return made


def price(usage: Usage) -> int:
    rate = CATALOG.model(usage.model).price_at(usage.when)
    return cost(
        usage.input_tokens, usage.output_tokens, rate.input_per_million_tokens, rate.output_per_million_tokens
    )


def amounts(usage: Usage) -> Amounts:
    return (1, usage.input_tokens, usage.output_tokens, price(usage), int(usage.estimated))


def month(usage: Usage) -> str:
    return usage.when.strftime("%Y-%m")


def totals_key(usage: Usage) -> str:
    return "|".join(
        (usage.when.strftime("%Y-%m-%dT%H"), usage.model, usage.tier, usage.api_key, usage.finish_reason)
    )


def summed(usages: Sequence[Usage], key: Callable[[Usage], str]) -> dict[str, Amounts]:
    sums: dict[str, Amounts] = defaultdict(lambda: ZERO)
    for usage in usages:
        sums[key(usage)] = add(sums[key(usage)], amounts(usage))
    return dict(sums)


def by_account(usages: Sequence[Usage]) -> dict[tuple[str, str], list[Usage]]:
    accounts: dict[tuple[str, str], list[Usage]] = defaultdict(list)
    for usage in usages:
        accounts[(usage.user_id, month(usage))].append(usage)
    return dict(accounts)


async def turns_written(reader: Reader, accounts: Sequence[tuple[str, str]]) -> int:
    """Line items in these months of these users, as their totals count them."""
    found = await asyncio.gather(*(reader.store.account(user, month) for user, month in accounts))
    return sum(amounts[0] for account in found for amounts in account.totals.values())


async def drained(bench: Bench, reader: Reader, usages: Sequence[Usage], timeout_s: float) -> float:
    """Wait until every event is a line item and the subscription holds nothing unacknowledged;
    how long that took."""
    started = time.monotonic()
    accounts = list(by_account(usages))

    async def probe() -> tuple[int, object, object]:
        stats = await bench.stats()
        return await turns_written(reader, accounts), stats.get("msgBacklog"), stats.get("unackedMessages")

    await eventually(probe, lambda seen: seen == (len(usages), 0, 0), timeout_s)
    return time.monotonic() - started


async def check_ledger(reader: Reader, usages: Sequence[Usage], period: Period) -> None:
    """Every line item, month total, report and budget share equals the events' exact sums."""
    accounts = by_account(usages)
    for (user, month_), mine in accounts.items():
        account = await reader.store.account(user, month_)
        assert dict(account.totals) == summed(mine, totals_key), f"totals of {user} in {month_}"
        items = await reader.store.items(user, month_, period.start, period.end, 10 * len(mine))
        assert sorted(
            (
                i.event_id,
                i.model,
                i.tier,
                i.api_key,
                i.finish_reason,
                i.estimated,
                i.input_tokens,
                i.output_tokens,
                i.cost_micros,
            )
            for i in items
        ) == sorted(
            (
                u.event_id,
                u.model,
                u.tier,
                u.api_key,
                u.finish_reason,
                u.estimated,
                u.input_tokens,
                u.output_tokens,
                price(u),
            )
            for u in mine
        ), f"line items of {user} in {month_}"
        spent = sum(price(u) for u in mine)
        standing = await reader.budgets.standing(BudgetScope.user(user), month_)
        assert standing.spent == spent, f"budget state of {user} in {month_}"
        for key, key_amounts in summed(mine, lambda u: u.api_key).items():
            if key:
                standing = await reader.budgets.standing(BudgetScope.api_key(user, key), month_)
                assert standing.spent == key_amounts[3], f"budget state of {user}/{key} in {month_}"

    users = {user for user, _ in accounts}
    for user in users:
        mine = [u for u in usages if u.user_id == user]
        assert sorted(await reader.store.user_months(user), reverse=True) == sorted(
            {month(u) for u in mine}, reverse=True
        )
        total, models = await reader.reports.usage(user, period.start, period.end)
        assert total == summed(mine, lambda u: "")[""], f"usage of {user}"
        assert {g.key: g.amounts for g in models} == summed(mine, lambda u: u.model)

    dimensions: dict[str, tuple[Callable[[Entry], str], Callable[[Usage], str]]] = {
        "day": (_DIMENSIONS[pb.SPEND_DIMENSION_DAY], lambda u: u.when.strftime("%Y-%m-%d")),
        "model": (_DIMENSIONS[pb.SPEND_DIMENSION_MODEL], lambda u: f"models/{u.model}"),
        "tier": (_DIMENSIONS[pb.SPEND_DIMENSION_TIER], lambda u: u.tier),
        "api key": (
            _DIMENSIONS[pb.SPEND_DIMENSION_API_KEY],
            lambda u: f"users/{u.user_id}/apiKeys/{u.api_key}" if u.api_key else "",
        ),
        "user": (_DIMENSIONS[pb.SPEND_DIMENSION_USER], lambda u: f"users/{u.user_id}"),
    }
    for name, (entry_key, usage_key) in dimensions.items():
        groups = await reader.reports.spend(entry_key, period.start, period.end)
        assert {g.key: g.amounts for g in groups} == summed(usages, usage_key), f"spend by {name}"

    # A tier's budget sums every user's share: the tiers are this test's own, so only its users count.
    for tier_month, tier_amounts in summed(usages, lambda u: f"{u.tier}|{month(u)}").items():
        tier, month_ = tier_month.split("|")
        standing = await reader.budgets.standing(BudgetScope.tier(tier), month_)
        assert standing.spent == tier_amounts[3], f"budget state of tier {tier} in {month_}"


def create_subscription(client: pulsar.Client, subscription: str) -> None:
    """Subscribe once, from the newest message: the topic keeps what is published from now on
    for the ledgers (and nothing of earlier tests' events)."""
    client.subscribe(
        topic_url(USAGE),
        subscription,
        consumer_type=pulsar.ConsumerType.KeyShared,
        initial_position=pulsar.InitialPosition.Latest,
    ).close()


@pytest.fixture
def broker_client(bench: Bench) -> Iterator[pulsar.Client]:
    client = pulsar.Client(
        bench.pulsar_url, operation_timeout_seconds=10, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error)
    )
    try:
        yield client
    finally:
        client.close()


def own_tiers() -> tuple[str, str]:
    run = secrets.token_hex(3)
    return (f"free-{run}", f"pro-{run}")


# -- the tests ------------------------------------------------------------------------------

EVENTS = 10_000
USERS = 50
#: The first ledger is killed once it has priced at least this many events.
KILL_AT = 2_000
HANDLED = "parley_ledger_events_total"


async def test_a_ledger_killed_part_way_and_fed_every_event_twice_bills_each_event_once(
    bench: Bench, open_reader: Callable[[], Reader], broker_client: pulsar.Client
) -> None:
    started = time.monotonic()
    seed = secrets.randbits(32)
    period = Period.last_two_months()
    made = usages(random.Random(seed), EVENTS, USERS, period, own_tiers())
    events = [u.event() for u in made]
    accounts = list(by_account(made))
    await asyncio.to_thread(create_subscription, broker_client, bench.subscription)
    producer = await asyncio.to_thread(relay_producer, broker_client)
    await asyncio.to_thread(publish, producer, events)

    first = await bench.start_ledger()
    reader = open_reader()
    priced_at_kill = await eventually(
        lambda: first.metric(HANDLED, outcome="priced"), lambda priced: priced >= KILL_AT, 120
    )
    await first.kill()
    await asyncio.to_thread(publish, producer, events)  # every event again, with the same ids
    # Read after the second publish: a write the killed process had sent has landed by now.
    written_at_kill = await turns_written(reader, accounts)
    second = await bench.start_ledger()
    drain_s = await drained(bench, reader, made, 180)
    priced, duplicates, retried = [
        await second.metric(HANDLED, outcome=outcome) for outcome in ("priced", "duplicate", "retried")
    ]
    await check_ledger(reader, made, period)

    # The numbers worth quoting (pytest -s shows them).
    print(
        f"\ncrash and replay (seed {seed}): the first ledger was killed at {priced_at_kill:.0f} priced, "
        f"with {written_at_kill} line items written; the restarted one priced {priced:.0f}, found "
        f"{duplicates:.0f} duplicates and retried {retried:.0f}, drained in {drain_s:.1f} s; "
        f"{len(accounts)} months of {len({u for u, _ in accounts})} users; "
        f"test {time.monotonic() - started:.1f} s"
    )
    assert KILL_AT <= written_at_kill < EVENTS, "the first ledger was killed part-way"
    missing = EVENTS - written_at_kill
    # Exactly what was missing, less what a failed batch wrote before it failed (counted as a
    # duplicate when it came again).
    assert missing - retried <= priced <= missing, "the restarted ledger priced what was missing"
    assert priced + duplicates >= missing + EVENTS, "every replayed event came to it again"


INSTANCE_EVENTS = 4_000
INSTANCE_USERS = 40


async def test_two_ledgers_on_one_subscription_split_the_events_and_bill_each_once(
    bench: Bench, open_reader: Callable[[], Reader], broker_client: pulsar.Client
) -> None:
    started = time.monotonic()
    seed = secrets.randbits(32)
    period = Period.last_two_months()
    made = usages(random.Random(seed), INSTANCE_EVENTS, INSTANCE_USERS, period, own_tiers())
    await asyncio.to_thread(create_subscription, broker_client, bench.subscription)
    # Started together, as a deployment's replicas are: both migrate the new keyspace.
    ledgers = await asyncio.gather(bench.start_ledger(), bench.start_ledger())
    await eventually(bench.stats, lambda stats: len(stats.get("consumers", [])) == 2, 60)
    producer = await asyncio.to_thread(relay_producer, broker_client)
    await asyncio.to_thread(publish, producer, [u.event() for u in made])

    reader = open_reader()
    drain_s = await drained(bench, reader, made, 120)
    priced = [await ledger.metric(HANDLED, outcome="priced") for ledger in ledgers]
    retried = [await ledger.metric(HANDLED, outcome="retried") for ledger in ledgers]
    await check_ledger(reader, made, period)

    print(
        f"\ntwo ledgers (seed {seed}): priced {priced[0]:.0f} and {priced[1]:.0f}, retried "
        f"{sum(retried):.0f}, drained in {drain_s:.1f} s; test {time.monotonic() - started:.1f} s"
    )
    assert min(priced) > 0, "each ledger had users of its own"
    assert INSTANCE_EVENTS - sum(retried) <= sum(priced) <= INSTANCE_EVENTS

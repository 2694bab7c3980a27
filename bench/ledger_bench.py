"""svc_ledger benchmark: usage events priced per second against a plain consumer, and what the
budget reservation adds to the router's admission check.

Every number comes from one run on this machine, against the local stack's real Cassandra,
Redis and Pulsar:

- ledger/raw: `--events` TurnCompleted events (spread over `--users` fresh users, the
  catalog models smollm2, parley-tiny and parley-scripted, tiers free and pro, with usage)
  are published to the usage topic as the router's outbox publishes them (one message per
  event, keyed by user id, batching off). Their subscriptions exist before the first event
  is sent (the topic keeps nothing for a subscription that does not exist yet), each with
  a name of this run's own, so every subscription holds exactly these events:
  - raw: a plain `pulsar.asyncio` consumer (Key_Shared, the ledger's receiver queue size)
    that receives and acknowledges each event and does nothing else, timed from subscribe
    until every event is received and its acknowledgement confirmed. Measured twice, before
    and after the ledger, so drift between the two shows; the rate is their mean.
  - ledger: a LedgerApp in-process (a fresh keyspace, its own subscription), timed from the
    moment its consumer may subscribe (after migrations and start-up: the client it is handed
    holds `subscribe` until then) until `parley_ledger_events_total{outcome="priced"}`
    counts every event: decoded, priced, written as conditional batches with the month's
    totals, the turn minutes written, the budgets' Redis state settled, acknowledged.
  The ratio is ledger events/s over raw events/s.
- admission: `--admissions` admissions per path, `--concurrency` at once, each as one of the
  users in turn (tier "bench", limits that never refuse), against the stack's Redis:
  - `admit`: svc_router's `Admission.admit` alone (three token buckets, one Lua call);
  - `admit+reserve`: `admit`, then `BudgetState.reserve` for the user's and the tier's
    budget, both with limits, so the script checks and holds on both (what a turn's
    admission costs once budgets are reserved, one call after the other);
  - `admit||reserve`: the same two calls sent at once (asyncio.gather), what one round trip
    for both would come near;
  - `reserve`: the reservation alone.
  Latency per admission (mean, p50 and p99, nearest rank) and admissions per second, in
  alternating rounds (admit, admit+reserve, admit||reserve, reserve, admit, ...) so drift
  hits every path alike, after a warm-up. The ratio is admit+reserve over admit. The
  reservations are released afterwards (`reserved_left_after_release` says they were) and
  the bench's limits removed.

The bench's Redis state (the budgets' and the buckets') is in database 7, apart from the
services' own; its subscriptions are removed and its keyspace dropped at the end.
`cpu_s` is the CPU time of each process (this one, which runs the ledger or the router's
check, and the servers) inside each timed phase, from /proc. This machine has 2 cores,
shared by every process and by other work on it, so the rates are lower bounds; the
ratios compare paths under the same sharing.

Run: `PARLEY_TEST_PORT_OFFSET=5000 .venv/bin/python -m bench.ledger_bench [--json out.json]`
(about a minute once the stack is up; it starts Cassandra, Redis and Pulsar at port offset
1000, or PARLEY_TEST_PORT_OFFSET, and `--keep-stack` leaves them running).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import secrets
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pulsar
import pulsar.asyncio
from redis.asyncio import BlockingConnectionPool, Redis

from bench._measure import cpu_delta, cpu_s, json_ready, percentile
from parley.common.v1 import common_pb2
from parley.events.v1 import events_pb2
from parley_core.budgets import BudgetLimits, BudgetScope, BudgetState, month_of
from parley_core.cassandra import connect_to
from parley_core.events import USAGE, topic_url
from parley_core.logging import configure_logging
from parley_core.ratelimit import BucketSize, TokenBucketLimiter
from parley_core.wire import timestamp
from parley_stack.config import StackConfig
from parley_stack.testing import LocalStack, test_port_offset
from svc_ledger.app import LedgerApp
from svc_ledger.settings import LedgerSettings
from svc_router.admission import Admission
from svc_router.settings import RouterSettings, TierLimits

#: Real catalog models, so every event is priced (none is dead-lettered as unknown).
MODELS = ("smollm2", "parley-tiny", "parley-scripted")
TIERS = ("free", "pro")
#: The Redis database of the bench's budget state and buckets: the budgets' keys are the
#: same in every database (the tiers' spent above all), so the bench keeps its own.
REDIS_DB = 7
#: Limits that never refuse the bench.
ROOMY = TierLimits(
    turns=BucketSize(capacity=1_000_000, refill_per_s=10_000),
    tokens=BucketSize(capacity=1_000_000_000, refill_per_s=1_000_000),
    tier_turns=BucketSize(capacity=10_000_000, refill_per_s=100_000),
)
#: What one turn reserves: about smollm2's largest turn (2048 tokens at its output price).
RESERVE_MICROS = 205
#: How long a reservation holds: the router's default (turn_timeout_s + 300).
HOLD_S = 900.0
#: admit, then reserve (as the router does); both sent at once; each alone.
ADMISSION_PATHS = ("admit", "admit+reserve", "admit||reserve", "reserve")


# Statistics ---------------------------------------------------------------------------


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Count, mean, p50, p99 and max of durations (seconds in, milliseconds out)."""
    if not seconds:
        return {"count": 0, "mean_ms": math.nan, "p50_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan}
    return {
        "count": len(seconds),
        "mean_ms": sum(seconds) / len(seconds) * 1000,
        "p50_ms": percentile(seconds, 0.50) * 1000,
        "p99_ms": percentile(seconds, 0.99) * 1000,
        "max_ms": max(seconds) * 1000,
    }


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else math.nan


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def admission_ratios(paths: dict[str, dict[str, float]]) -> dict[str, float]:
    """admit+reserve over admit alone, by mean, p50 and p99."""
    both, alone = paths["admit+reserve"], paths["admit"]
    return {f"{key}_ratio": ratio(both[f"{key}_ms"], alone[f"{key}_ms"]) for key in ("mean", "p50", "p99")}


# Events -------------------------------------------------------------------------------


def bench_users(run_id: str, count: int) -> list[str]:
    """Fresh user ids: nothing the stack already holds counts towards them."""
    return [f"bench-{run_id}-u{index}" for index in range(count)]


def usage_events(users: Sequence[str], count: int, when: datetime) -> list[events_pb2.TurnCompleted]:
    """`count` TurnCompleted events, round-robin over users and models; each user in one tier."""
    events = []
    for index in range(count):
        user = users[index % len(users)]
        event_id = uuid.uuid4().hex
        event = events_pb2.TurnCompleted(
            event_id=event_id,
            event_time=timestamp(when),
            user=f"users/{user}",
            tier=TIERS[(index % len(users)) % len(TIERS)],
            turn=f"users/{user}/conversations/c{event_id[:8]}/turns/t{event_id}",
            model=f"models/{MODELS[index % len(MODELS)]}",
            finish_reason="stop",
        )
        event.usage.CopyFrom(
            common_pb2.TokenUsage(input_tokens=100 + index % 900, output_tokens=20 + index % 300)
        )
        events.append(event)
    return events


def publish(url: str, events: Sequence[events_pb2.TurnCompleted]) -> None:
    """As the outbox relay publishes (blocking; run it in a thread): one message per event,
    keyed by user, the event id as a property."""
    client = pulsar.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        producer = client.create_producer(
            topic_url(USAGE), batching_enabled=False, block_if_queue_full=True, max_pending_messages=5000
        )
        failures: list[Any] = []

        def sent(result: Any, _message_id: Any) -> None:
            if result != pulsar.Result.Ok:
                failures.append(result)

        for event in events:
            producer.send_async(
                event.SerializeToString(),
                sent,
                partition_key=event.user.removeprefix("users/"),
                properties={"event_id": event.event_id},
            )
        producer.flush()
        producer.close()
        if failures:
            raise RuntimeError(f"{len(failures)} events were not published: {failures[0]}")
    finally:
        client.close()


async def subscribe(client: pulsar.asyncio.Client, subscription: str, queue_size: int) -> Any:
    return await client.subscribe(
        topic_url(USAGE),
        subscription,
        consumer_type=pulsar.ConsumerType.KeyShared,
        initial_position=pulsar.InitialPosition.Latest,
        receiver_queue_size=queue_size,
    )


async def create_subscriptions(url: str, names: Sequence[str], queue_size: int) -> None:
    """Make the subscriptions before anything is published, so each holds what follows."""
    client = pulsar.asyncio.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        for name in names:
            consumer = await subscribe(client, name, queue_size)
            await consumer.close()
    finally:
        await client.close()


async def raw_drain(url: str, subscription: str, count: int, queue_size: int) -> float:
    """Seconds to receive and acknowledge `count` events with nothing else done to them."""
    client = pulsar.asyncio.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        started = time.perf_counter()
        consumer = await subscribe(client, subscription, queue_size)
        # Acknowledgements are grouped by the client and confirmed at its flush: awaiting each
        # in turn would time the flush interval, not the consumer.
        acks: list[asyncio.Task[None]] = []
        for _ in range(count):
            message = await consumer.receive()
            acks.append(asyncio.ensure_future(consumer.acknowledge(message)))
        await asyncio.gather(*acks)
        elapsed = time.perf_counter() - started
        await consumer.unsubscribe()
        return elapsed
    finally:
        await client.close()


async def drop_subscriptions(url: str, names: Sequence[str]) -> None:
    """Remove the bench's subscriptions: each would keep a backlog of every later event."""
    client = pulsar.asyncio.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        for name in names:
            with contextlib.suppress(Exception):  # gone already (a raw consumer unsubscribed)
                consumer = await subscribe(client, name, 1)
                await consumer.unsubscribe()
    finally:
        await client.close()


class _GatedClient:
    """The ledger's own Pulsar client, whose `subscribe` waits until the clock starts."""

    def __init__(self, client: pulsar.asyncio.Client, gate: asyncio.Event) -> None:
        self._client = client
        self._gate = gate

    async def subscribe(self, *args: Any, **kwargs: Any) -> Any:
        await self._gate.wait()
        return await self._client.subscribe(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _sample(app: LedgerApp, name: str, labels: dict[str, str] | None = None) -> float:
    value = app.data.registry.get_sample_value(name, labels or {})
    return float(value) if value is not None else 0.0


async def ledger_drain(settings: LedgerSettings, count: int, processes: Processes) -> dict[str, Any]:
    """Start a ledger whose consumer waits; then time it pricing `count` events."""
    gate = asyncio.Event()

    def client(url: str) -> pulsar.asyncio.Client:
        made = pulsar.asyncio.Client(
            url, operation_timeout_seconds=10, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error)
        )
        return _GatedClient(made, gate)

    app = await LedgerApp.start(settings, pulsar_client=client)
    try:
        cpu_before = processes.cpu()
        started = time.perf_counter()
        gate.set()
        deadline = started + max(120.0, count / 50)
        while (priced := _sample(app, "parley_ledger_events_total", {"outcome": "priced"})) < count:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the ledger priced {priced:.0f} of {count} events before the deadline")
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        cpu = cpu_delta(cpu_before, processes.cpu())
        batches = _sample(app, "parley_ledger_batch_seconds_count")
        return {
            "seconds": elapsed,
            "events_per_s": rate(count, elapsed),
            "priced": priced,
            "duplicates": _sample(app, "parley_ledger_events_total", {"outcome": "duplicate"}),
            "retried": _sample(app, "parley_ledger_events_total", {"outcome": "retried"}),
            "dead_letters": _sample(app, "parley_ledger_events_total", {"outcome": "dead_letter"}),
            "batches": batches,
            "events_per_batch": ratio(priced, batches),
            "batch_mean_ms": ratio(_sample(app, "parley_ledger_batch_seconds_sum"), batches) * 1000,
            "cpu_s": cpu,
        }
    finally:
        await app.stop()


async def drop_keyspace(settings: LedgerSettings) -> None:
    """The bench's keyspace is of no use after the run; a stack that keeps every one slows."""
    cluster, session = await asyncio.to_thread(connect_to, settings)
    try:
        await asyncio.to_thread(session.execute, f"DROP KEYSPACE IF EXISTS {settings.keyspace}", timeout=60)
    except Exception as error:
        _progress(f"keyspace {settings.keyspace} left behind: {error!r}")
    finally:
        await asyncio.to_thread(cluster.shutdown)


# Admission ----------------------------------------------------------------------------


@dataclass
class AdmissionRun:
    """The router's check on the bench's users, with and without the budget reservation."""

    admission: Admission
    budgets: BudgetState
    users: Sequence[str]
    tier: str
    month: str
    turns: list[str] = field(default_factory=list)

    def scopes(self, user: str) -> tuple[BudgetScope, BudgetScope]:
        return BudgetScope.user(user), BudgetScope.tier(self.tier)

    async def reserve(self, user: str) -> None:
        turn = uuid.uuid4().hex
        self.turns.append(turn)
        reservation = await self.budgets.reserve(
            turn, RESERVE_MICROS, self.scopes(user), month=self.month, hold_s=HOLD_S
        )
        if reservation.refusal is not None:
            raise RuntimeError(f"the bench's budget refused a turn: {reservation.refusal}")

    async def call(self, path: str, user: str) -> None:
        if path == "admit||reserve":
            await asyncio.gather(self.admission.admit(user, self.tier), self.reserve(user))
            return
        if path in ("admit", "admit+reserve"):
            await self.admission.admit(user, self.tier)
        if path in ("admit+reserve", "reserve"):
            await self.reserve(user)


async def timed_calls(
    call: Callable[[str], Awaitable[None]], users: Sequence[str], count: int, concurrency: int, offset: int
) -> list[float]:
    """Durations of `count` calls, `concurrency` at once, each as a user in turn."""
    durations: list[float] = []
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            index = next_index
            next_index += 1
            user = users[(offset + index) % len(users)]
            started = time.perf_counter()
            await call(user)
            durations.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    return durations


def rounds_of(total: int, rounds: int) -> list[int]:
    """`total` split into `rounds` parts as equal as can be (the first ones larger)."""
    rounds = max(1, min(rounds, total)) if total > 0 else 1
    return [total // rounds + (1 if index < total % rounds else 0) for index in range(rounds)]


async def admission_bench(
    redis: Redis, users: Sequence[str], count: int, concurrency: int, rounds: int, processes: Processes
) -> dict[str, Any]:
    settings = RouterSettings(keyspace="bench_router", redis_url="redis://unused", tiers={"bench": ROOMY})
    budgets = BudgetState(redis)
    run = AdmissionRun(
        Admission(TokenBucketLimiter(redis), settings), budgets, users, "bench", month_of(datetime.now(UTC))
    )
    await budgets.mark_ready("ledger bench")
    limits = BudgetLimits(soft=10**15, hard=10**16)
    scopes = {scope for user in users for scope in run.scopes(user)}
    for scope in scopes:
        await budgets.set_limits(scope, limits)
    durations: dict[str, list[float]] = {path: [] for path in ADMISSION_PATHS}
    wall: dict[str, float] = dict.fromkeys(ADMISSION_PATHS, 0.0)
    cpu: dict[str, dict[str, float]] = {path: {} for path in ADMISSION_PATHS}
    try:
        for path in ADMISSION_PATHS:  # warm-up: scripts loaded, connections open
            await timed_calls(functools.partial(run.call, path), users, concurrency * 4, concurrency, 0)
        for size in rounds_of(count, rounds):
            for path in ADMISSION_PATHS:
                before, started = processes.cpu(), time.perf_counter()
                durations[path] += await timed_calls(
                    functools.partial(run.call, path), users, size, concurrency, len(durations[path])
                )
                wall[path] += time.perf_counter() - started
                for name, seconds in cpu_delta(before, processes.cpu()).items():
                    cpu[path][name] = cpu[path].get(name, 0.0) + seconds
    finally:
        for first in range(0, len(run.turns), 500):
            await budgets.release(run.turns[first : first + 500])
        for scope in scopes:
            await budgets.set_limits(scope, BudgetLimits())
    paths = {
        path: latency_summary(values) | {"per_s": rate(len(values), wall[path])}
        for path, values in durations.items()
    }
    left = await budgets.standing(BudgetScope.tier(run.tier), run.month)
    return {
        "concurrency": concurrency,
        "paths": paths,
        "cpu_s": cpu,
        "reserved_left_after_release": left.reserved,
    } | admission_ratios(paths)


# Processes (/proc) ----------------------------------------------------------------------


class Processes:
    """The processes whose CPU the bench reports, by name (`client` is this one)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {"client": os.getpid()} | pids

    def cpu(self) -> dict[str, float]:
        return {name: cpu_s(pid) for name, pid in self.pids.items()}


# The run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    events: int
    users: int
    admissions: int
    concurrency: int
    rounds: int
    keep_stack: bool
    json_path: Path | None


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ledger_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=_positive, default=20_000, help="usage events published")
    parser.add_argument("--users", type=_positive, default=100, help="fresh users the events belong to")
    parser.add_argument("--admissions", type=_positive, default=2_000, help="admissions per path")
    parser.add_argument("--concurrency", type=_positive, default=16, help="admissions at once")
    parser.add_argument("--rounds", type=_positive, default=4, help="alternating admission rounds")
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    return Options(
        events=args.events,
        users=args.users,
        admissions=args.admissions,
        concurrency=args.concurrency,
        rounds=args.rounds,
        keep_stack=args.keep_stack,
        json_path=args.json,
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


async def run(options: Options) -> dict[str, Any]:
    stack = LocalStack(StackConfig(port_offset=test_port_offset()), reuse=options.keep_stack)
    try:
        _progress("starting cassandra, redis and pulsar (minutes the first time)")
        await asyncio.to_thread(stack.ensure, "cassandra", "redis", "pulsar")
        return await _measure(stack, options)
    finally:
        if not options.keep_stack:
            await asyncio.to_thread(stack.close)


async def _measure(stack: LocalStack, options: Options) -> dict[str, Any]:
    cql_host, cql_port = stack.endpoint("cassandra-1", "cql")
    redis_host, redis_port = stack.endpoint("redis", "redis")
    broker = stack.stack.table.running("pulsar")
    assert broker is not None
    pulsar_url = broker.endpoints["pulsar"]
    pids = {}
    for name in ("cassandra-1", "redis", "pulsar"):
        running = stack.stack.table.running(name)
        if running is not None:
            pids[name.split("-")[0]] = running.pid
    processes = Processes(pids)
    run_id = secrets.token_hex(4)
    users = bench_users(run_id, options.users)
    redis_url = f"redis://{redis_host}:{redis_port}/{REDIS_DB}"
    settings = LedgerSettings(
        cassandra_hosts=[cql_host],
        cassandra_port=cql_port,
        keyspace=f"bench_ledger_{run_id}",
        redis_url=redis_url,
        pulsar_url=pulsar_url,
        subscription=f"bench-ledger-{run_id}",
        subscribe_from="earliest",
        metrics_port=-1,
        shutdown_grace_s=1,
    )
    queue_size = settings.batch_size * 2
    raw_names = [f"bench-raw-{run_id}-before", f"bench-raw-{run_id}-after"]
    results: dict[str, Any] = {
        "run_id": run_id,
        "events": options.events,
        "users": options.users,
        "models": list(MODELS),
        "ledger_batch_size": settings.batch_size,
        "receiver_queue_size": queue_size,
    }

    subscriptions = [*raw_names, settings.subscription]
    _progress(f"publishing {options.events} usage events for {options.users} users")
    await create_subscriptions(pulsar_url, subscriptions, queue_size)
    try:
        events = usage_events(users, options.events, datetime.now(UTC))
        started = time.perf_counter()
        await asyncio.to_thread(publish, pulsar_url, events)
        results["publish_events_per_s"] = rate(options.events, time.perf_counter() - started)

        raw: dict[str, Any] = {"cpu_s": {}}
        for when, name in zip(("before", "after"), raw_names, strict=True):
            if when == "after":
                _progress("ledger")
                try:
                    results["ledger"] = await ledger_drain(settings, options.events, processes)
                finally:
                    await drop_keyspace(settings)
            _progress(f"raw consumer ({when} the ledger)")
            cpu_before = processes.cpu()
            raw[f"{when}_s"] = await raw_drain(pulsar_url, name, options.events, queue_size)
            raw["cpu_s"][when] = cpu_delta(cpu_before, processes.cpu())
            raw[f"events_per_s_{when}"] = rate(options.events, raw[f"{when}_s"])
    finally:
        await drop_subscriptions(pulsar_url, subscriptions)
    raw["events_per_s"] = (raw["events_per_s_before"] + raw["events_per_s_after"]) / 2
    results["raw"] = raw
    results["ledger_to_raw_ratio"] = ratio(results["ledger"]["events_per_s"], raw["events_per_s"])

    _progress(f"admission: {options.admissions} per path, {options.concurrency} at once")
    redis = Redis.from_pool(BlockingConnectionPool.from_url(redis_url, max_connections=512, timeout=2.0))
    try:
        results["admission"] = await admission_bench(
            redis, users, options.admissions, options.concurrency, options.rounds, processes
        )
    finally:
        await redis.aclose()
    return results


def _progress(message: str) -> None:
    print(f"bench: {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# Output ---------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def table(results: dict[str, Any]) -> str:
    """The headline numbers as a plain table."""
    raw, ledger = results["raw"], results["ledger"]
    lines = [
        f"usage events: {results['events']} for {results['users']} users",
        f"  raw consumer   {_fmt(raw['events_per_s'], 0):>8} events/s  (before the ledger "
        f"{_fmt(raw['events_per_s_before'], 0)}, after {_fmt(raw['events_per_s_after'], 0)})",
        f"  ledger         {_fmt(ledger['events_per_s'], 0):>8} events/s  ({_fmt(ledger['seconds'])} s, "
        f"{_fmt(ledger['batches'], 0)} batches of {_fmt(ledger['events_per_batch'], 0)} events, "
        f"{_fmt(ledger['batch_mean_ms'])} ms each)",
        f"  ledger / raw   {_fmt(results['ledger_to_raw_ratio'], 3):>8}",
        "",
    ]
    admission = results["admission"]
    rows = [("admission", "mean ms", "p50 ms", "p99 ms", "max ms", "per s")]
    for path, summary in admission["paths"].items():
        rows.append((
            path, _fmt(summary["mean_ms"], 3), _fmt(summary["p50_ms"], 3), _fmt(summary["p99_ms"], 3),
            _fmt(summary["max_ms"], 3), _fmt(summary["per_s"], 0),
        ))  # fmt: skip
    rows.append((
        "ratio", _fmt(admission["mean_ratio"], 2), _fmt(admission["p50_ratio"], 2),
        _fmt(admission["p99_ratio"], 2), "", "",
    ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += [
        "  ".join(cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width) in
                  enumerate(zip(row, widths, strict=True)))
        for row in rows
    ]  # fmt: skip
    lines.append(f"({admission['concurrency']} at once; ratio: admit+reserve over admit)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_args(argv)
    configure_logging("console", "warning")
    results = asyncio.run(run(options))
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(json_ready(results), indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()

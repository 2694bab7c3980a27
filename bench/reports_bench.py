"""svc_ledger's admin reports: the hourly view against the months' totals, in one run.

One past day of the bench's own (a fresh keyspace) holds `--events` usage events of
`--active` users, spread over its 24 hours; the same month holds `--idle` more users with
one event each on another day, as a month's users who are not active today. A LedgerApp
(the real consumer, against the local stack's Cassandra, Redis and Pulsar) prices them all.
Then everyone's entries of that day are read both ways, alternately, `--rounds` times:

- by hour: `Reports.entries_by_hour`, 24 partitions of `hour_users`, which GetSpendReport
  and GetAdminOverview read;
- from accounts: `Reports.entries_from_accounts(None, ...)`, every month user's totals,
  which they read before the hourly view.

Both must give the same entries, or the bench fails. The ratio is the from-accounts
median over the by-hour median; `entries` is how many entries each read returned. This
machine has 2 cores shared by Cassandra and everything else, so times are upper bounds;
the ratio compares the two reads under the same sharing.

Run: `PARLEY_TEST_PORT_OFFSET=5000 .venv/bin/python -m bench.reports_bench [--json out.json]`
(it starts Cassandra, Redis and Pulsar at port offset 1000, or PARLEY_TEST_PORT_OFFSET;
`--keep-stack` leaves them running; the keyspace and subscription are removed at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench._measure import json_ready
from bench.ledger_bench import (
    REDIS_DB,
    bench_users,
    create_subscriptions,
    drop_keyspace,
    drop_subscriptions,
    publish,
    usage_events,
)
from parley_core.logging import configure_logging
from parley_stack.config import StackConfig
from parley_stack.testing import LocalStack, test_port_offset
from svc_ledger.app import LedgerApp
from svc_ledger.reports import Entry, Reports
from svc_ledger.settings import LedgerSettings

#: The bench's day: in the past, so no live traffic of the stack falls in it.
DAY = datetime(2025, 1, 15, tzinfo=UTC)


def _progress(message: str) -> None:
    print(f"bench: {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def day_events(active: Sequence[str], idle: Sequence[str], count: int) -> list[Any]:
    """`count` events of the active users over DAY's hours, and one per idle user 10 days earlier."""
    per_hour = max(1, count // 24)
    events = [
        event
        for hour in range(24)
        for event in usage_events(active, per_hour, DAY + timedelta(hours=hour, minutes=30))
    ]
    return events + usage_events(idle, len(idle), DAY - timedelta(days=10))


def _entries(found: list[Entry]) -> list[tuple[str, tuple[str, ...], tuple[int, ...]]]:
    return sorted((e.user_id, e.parts, e.amounts) for e in found)


async def _priced(app: LedgerApp, count: int, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        priced = app.data.registry.get_sample_value("parley_ledger_events_total", {"outcome": "priced"}) or 0
        if priced >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the ledger priced {priced:.0f} of {count} events before the deadline")
        await asyncio.sleep(0.2)


async def measure(stack: LocalStack, options: argparse.Namespace) -> dict[str, Any]:
    cql_host, cql_port = stack.endpoint("cassandra-1", "cql")
    redis_host, redis_port = stack.endpoint("redis", "redis")
    broker = stack.stack.table.running("pulsar")
    assert broker is not None
    pulsar_url = broker.endpoints["pulsar"]
    run_id = secrets.token_hex(4)
    settings = LedgerSettings(
        cassandra_hosts=[cql_host],
        cassandra_port=cql_port,
        keyspace=f"bench_reports_{run_id}",
        redis_url=f"redis://{redis_host}:{redis_port}/{REDIS_DB}",
        pulsar_url=pulsar_url,
        subscription=f"bench-reports-{run_id}",
        subscribe_from="earliest",
        metrics_port=-1,
        shutdown_grace_s=1,
    )
    active, idle = bench_users(f"{run_id}a", options.active), bench_users(f"{run_id}i", options.idle)
    events = day_events(active, idle, options.events)
    await create_subscriptions(pulsar_url, [settings.subscription], settings.batch_size * 2)
    try:
        _progress(f"publishing {len(events)} events ({options.active} active users, {options.idle} idle)")
        await asyncio.to_thread(publish, pulsar_url, events)
        app = await LedgerApp.start(settings)
        try:
            started = time.perf_counter()
            await _priced(app, len(events), max(300.0, len(events) / 20))
            priced_s = time.perf_counter() - started
            await asyncio.wait_for(app.backfill.done.wait(), 300)
            return await _time_reads(Reports(app.store), options.rounds) | {
                "events": len(events),
                "active_users": options.active,
                "idle_users": options.idle,
                "priced_s": priced_s,
            }
        finally:
            await app.stop()
            await drop_keyspace(settings)
    finally:
        await drop_subscriptions(pulsar_url, [settings.subscription])


async def _time_reads(reports: Reports, rounds: int) -> dict[str, Any]:
    window = (DAY, DAY + timedelta(days=1))
    seconds: dict[str, list[float]] = {"by_hour": [], "from_accounts": []}
    results: dict[str, list[Entry]] = {}
    _progress(f"timing both reads, {rounds} rounds")
    for _round in range(rounds):
        for name in seconds:
            started = time.perf_counter()
            if name == "by_hour":
                results[name] = await reports.entries_by_hour(*window)
            else:
                results[name] = await reports.entries_from_accounts(None, *window)
            seconds[name].append(time.perf_counter() - started)
    if _entries(results["by_hour"]) != _entries(results["from_accounts"]):
        raise RuntimeError("the hourly view and the months' totals disagree")
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "entries": len(results["by_hour"]),
        "rounds": rounds,
        "seconds": seconds,
        "median_ms": {name: value * 1000 for name, value in medians.items()},
        "from_accounts_over_by_hour": medians["from_accounts"] / medians["by_hour"],
    }


async def run(options: argparse.Namespace) -> dict[str, Any]:
    stack = LocalStack(StackConfig(port_offset=test_port_offset()), reuse=options.keep_stack)
    try:
        _progress("starting cassandra, redis and pulsar (minutes the first time)")
        await asyncio.to_thread(stack.ensure, "cassandra", "redis", "pulsar")
        return await measure(stack, options)
    finally:
        if not options.keep_stack:
            await asyncio.to_thread(stack.close)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.reports_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=4_800, help="events of the active users in the day")
    parser.add_argument("--active", type=int, default=200, help="users with events in the day")
    parser.add_argument("--idle", type=int, default=5_000, help="users of the month with none in the day")
    parser.add_argument("--rounds", type=int, default=5, help="timed reads of each kind")
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    options = parser.parse_args(argv)
    configure_logging("console", "warning")
    results = asyncio.run(run(options))
    if options.json is not None:
        options.json.write_text(json.dumps(json_ready(results), indent=2) + "\n")
    median = results["median_ms"]
    print(
        f"reports over one day: {results['entries']} entries of {results['active_users']} active users; "
        f"{results['idle_users']} more users in the month\n"
        f"  by hour        {median['by_hour']:9.1f} ms (median of {results['rounds']})\n"
        f"  from accounts  {median['from_accounts']:9.1f} ms\n"
        f"  ratio          {results['from_accounts_over_by_hour']:9.2f} (from accounts over by hour)\n"
        f"  ({results['events']} events priced in {results['priced_s']:.1f} s)"
    )


if __name__ == "__main__":
    main()

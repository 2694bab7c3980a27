"""The ledger bench's statistics and inputs (bench/ledger_bench.py), without any server."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench._measure import percentile
from bench.ledger_bench import (
    MODELS,
    admission_ratios,
    bench_users,
    latency_summary,
    parse_args,
    rate,
    rounds_of,
    timed_calls,
    usage_events,
)
from parley_core.catalog import load_catalog
from svc_ledger.billing import price_event
from svc_ledger.pricing import PriceBook
from svc_ledger.settings import LedgerSettings


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 100 .. 1, unsorted on purpose
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0, 3.0], 0.99) == 7.0


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 0.5))


def test_latency_summary_in_milliseconds() -> None:
    summary = latency_summary([0.001] * 99 + [0.101])
    assert summary["count"] == 100
    assert summary["mean_ms"] == pytest.approx(2.0)
    assert summary["p50_ms"] == pytest.approx(1.0)
    assert summary["p99_ms"] == pytest.approx(1.0)  # the one slow call is the 100th of 100: above p99
    assert summary["max_ms"] == pytest.approx(101.0)


def test_latency_summary_of_nothing_is_nan() -> None:
    summary = latency_summary([])
    assert summary["count"] == 0
    assert all(math.isnan(summary[key]) for key in ("mean_ms", "p50_ms", "p99_ms", "max_ms"))


def test_rate_of_no_time_is_nan() -> None:
    assert rate(20_000, 2.0) == 10_000.0
    assert math.isnan(rate(20_000, 0.0))


def test_admission_ratio_is_with_reservation_over_without() -> None:
    paths = {
        "admit": {"mean_ms": 2.0, "p50_ms": 1.5, "p99_ms": 8.0},
        "admit+reserve": {"mean_ms": 5.0, "p50_ms": 3.0, "p99_ms": 10.0},
        "reserve": {"mean_ms": 3.0, "p50_ms": 1.5, "p99_ms": 2.0},
    }
    assert admission_ratios(paths) == {"mean_ratio": 2.5, "p50_ratio": 2.0, "p99_ratio": 1.25}


def test_rounds_split_the_calls_without_losing_any() -> None:
    assert rounds_of(2_000, 4) == [500, 500, 500, 500]
    assert rounds_of(10, 4) == [3, 3, 2, 2]
    assert rounds_of(2, 4) == [1, 1]


def test_arguments_have_defaults_for_a_run_of_minutes() -> None:
    options = parse_args([])
    sizes = (options.events, options.users, options.admissions, options.concurrency)
    assert sizes == (20_000, 100, 2_000, 16)
    assert options.json_path is None
    assert not options.keep_stack


def test_arguments_name_the_json_file_and_sizes() -> None:
    options = parse_args(["--events", "500", "--admissions", "100", "--json", "out/ledger.json"])
    assert (options.events, options.admissions) == (500, 100)
    assert options.json_path == Path("out/ledger.json")


def test_arguments_refuse_zero_events() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--events", "0"])


def test_events_spread_over_users_and_models_with_one_tier_per_user() -> None:
    users = bench_users("abcd1234", 10)
    events = usage_events(users, 300, datetime(2026, 11, 27, 12, tzinfo=UTC))
    assert Counter(e.user for e in events) == {f"users/{u}": 30 for u in users}
    assert Counter(e.model for e in events) == {f"models/{m}": 100 for m in MODELS}
    tiers: dict[str, set[str]] = {}
    for event in events:
        tiers.setdefault(event.user, set()).add(event.tier)
    assert all(len(each) == 1 for each in tiers.values())
    assert len({e.event_id for e in events}) == 300


def test_every_event_is_priced_by_the_ledger_at_catalog_prices() -> None:
    when = datetime.now(UTC)
    prices = PriceBook(load_catalog(LedgerSettings(keyspace="unused").catalog_path))
    for event in usage_events(bench_users("abcd1234", 7), 30, when):
        priced = price_event(event.SerializeToString(), prices, when)
        assert not priced.item.estimated
        assert priced.item.cost_micros > 0


async def test_timed_calls_keep_to_the_concurrency_and_time_every_call() -> None:
    running, most, seen = 0, 0, []

    async def call(user: str) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        seen.append(user)
        await asyncio.sleep(0.001)
        running -= 1

    durations = await timed_calls(call, ["a", "b", "c"], 20, 4, offset=1)
    assert len(durations) == 20
    assert most == 4
    assert seen[:3] == ["b", "c", "a"]
    assert Counter(seen) == {"a": 6, "b": 7, "c": 7}

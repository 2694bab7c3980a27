"""Admin reports: spend by day, user, tier, model and API key, and the overview's numbers."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pulsar
from google.protobuf.timestamp_pb2 import Timestamp

from parley.ledger.v1 import ledger_pb2 as pb
from parley_stack.testing import LocalStack
from svc_ledger.hours import project_unmarked_months
from svc_ledger.reports import Entry, Reports
from svc_ledger.store import ZERO, AccountMonth, Amounts, add
from tests.integration.history.helpers import Person
from tests.integration.ledger.conftest import admin_md, run_cql
from tests.integration.ledger.helpers import Usage, eventually, publish

if TYPE_CHECKING:
    from parley.ledger.v1.ledger_pb2_grpc import LedgerServiceAsyncStub
    from svc_ledger.app import LedgerApp


def _at(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


async def test_spend_reports_group_by_each_dimension(
    ledger: LedgerServiceAsyncStub, producer: pulsar.Producer, alice: Person, bob: Person, admin_token: str
) -> None:
    admin = admin_md(admin_token)
    tier = f"t{secrets.token_hex(4)}"
    # A window of its own, two days long, a year back: only this test's events are in it.
    day = datetime(2025, 6, 1, tzinfo=UTC) + timedelta(days=secrets.randbelow(300))
    usages = [
        Usage(alice.user_id, "parley-scripted", 10, 0, day + timedelta(hours=1), tier=tier, api_key="k1"),
        Usage(alice.user_id, "parley-scripted", 20, 0, day + timedelta(hours=25), tier=tier),
        Usage(bob.user_id, "parley-scripted", 40, 0, day + timedelta(hours=2), tier=tier),
        Usage(bob.user_id, "smollm2", 1_000_000, 0, day + timedelta(hours=3), tier=tier),  # 50,000
    ]
    publish(producer, [u.event() for u in usages])
    start, end = _at(day), _at(day + timedelta(days=2))

    async def report(dimension: pb.SpendDimension) -> dict[str, tuple[int, int]]:
        reply = await ledger.GetSpendReport(
            pb.GetSpendReportRequest(dimension=dimension, start_time=start, end_time=end), metadata=admin
        )
        return {row.key: (row.turns, row.cost.micros) for row in reply.rows}

    by_user = await eventually(lambda: report(pb.SPEND_DIMENSION_USER), lambda rows: len(rows) == 2)
    assert by_user == {alice.name: (2, 30), bob.name: (2, 50_040)}
    assert await report(pb.SPEND_DIMENSION_TIER) == {tier: (4, 50_070)}
    assert await report(pb.SPEND_DIMENSION_MODEL) == {
        "models/parley-scripted": (3, 70),
        "models/smollm2": (1, 50_000),
    }
    assert await report(pb.SPEND_DIMENSION_API_KEY) == {f"{alice.name}/apiKeys/k1": (1, 10), "": (3, 50_060)}
    first, second = day.strftime("%Y-%m-%d"), (day + timedelta(days=1)).strftime("%Y-%m-%d")
    days = await ledger.GetSpendReport(
        pb.GetSpendReportRequest(dimension=pb.SPEND_DIMENSION_DAY, start_time=start, end_time=end),
        metadata=admin,
    )
    assert [(r.key, r.cost.micros) for r in days.rows] == [(first, 50_050), (second, 20)]

    # Largest cost first, a page at a time.
    page = await ledger.GetSpendReport(
        pb.GetSpendReportRequest(
            dimension=pb.SPEND_DIMENSION_USER, page_size=1, start_time=start, end_time=end
        ),
        metadata=admin,
    )
    assert [r.key for r in page.rows] == [bob.name]
    rest = await ledger.GetSpendReport(
        pb.GetSpendReportRequest(
            dimension=pb.SPEND_DIMENSION_USER, page_token=page.next_page_token, start_time=start, end_time=end
        ),
        metadata=admin,
    )
    assert [r.key for r in rest.rows] == [alice.name]
    assert rest.next_page_token == ""

    # Whole hours: a range that starts within the first event's hour still counts it.
    partial = await ledger.GetSpendReport(
        pb.GetSpendReportRequest(
            dimension=pb.SPEND_DIMENSION_USER,
            start_time=_at(day + timedelta(hours=1, minutes=30)),
            end_time=_at(day + timedelta(hours=2, minutes=1)),
        ),
        metadata=admin,
    )
    assert {r.key: r.cost.micros for r in partial.rows} == {alice.name: 10, bob.name: 40}


async def test_the_overview_counts_turns_failures_cancellations_and_recent_minutes(
    ledger: LedgerServiceAsyncStub, producer: pulsar.Producer, people: object, admin_token: str
) -> None:
    admin = admin_md(admin_token)
    person: Person = await people()  # type: ignore[operator]
    now = datetime.now(UTC)
    before = await ledger.GetAdminOverview(pb.GetAdminOverviewRequest(), metadata=admin)
    usages = [
        Usage(person.user_id, "parley-tiny", 10, 5, now - timedelta(minutes=2), finish_reason="stop"),
        Usage(person.user_id, "parley-tiny", 10, 3, now - timedelta(minutes=2), finish_reason="error"),
        Usage(person.user_id, "parley-tiny", 10, 1, now - timedelta(minutes=3), finish_reason="cancelled"),
        Usage(person.user_id, "parley-tiny", 10, 1, now - timedelta(minutes=3), finish_reason="cancelled"),
    ]
    publish(producer, [u.event() for u in usages])

    after = await eventually(
        lambda: ledger.GetAdminOverview(pb.GetAdminOverviewRequest(), metadata=admin),
        lambda o: o.turns >= before.turns + 4,
    )

    assert after.failed_turns - before.failed_turns == 1
    assert after.cancelled_turns - before.cancelled_turns == 2
    tiny_before = {m.model: m for m in before.models}.get("models/parley-tiny")
    tiny = {m.model: m for m in after.models}["models/parley-tiny"]
    assert tiny.turns - (tiny_before.turns if tiny_before else 0) == 4
    assert tiny.failed_turns - (tiny_before.failed_turns if tiny_before else 0) == 1
    assert tiny.output_tokens - (tiny_before.output_tokens if tiny_before else 0) == 10
    costs = [r.cost.micros for r in after.top_users]
    assert costs == sorted(costs, reverse=True)
    assert len(costs) <= 10
    if person.name not in [r.key for r in after.top_users]:
        assert len(costs) == 10
        assert costs[-1] >= 8  # the person's cost: only users who spent as much are above
    assert len(after.turns_per_minute) == 60
    minutes = {m.minute.ToDatetime(tzinfo=UTC): m.turns for m in after.turns_per_minute}
    earlier = {m.minute.ToDatetime(tzinfo=UTC): m.turns for m in before.turns_per_minute}
    two_ago = (now - timedelta(minutes=2)).replace(second=0, microsecond=0)
    three_ago = (now - timedelta(minutes=3)).replace(second=0, microsecond=0)
    assert minutes[two_ago] - earlier.get(two_ago, 0) == 2
    assert minutes[three_ago] - earlier.get(three_ago, 0) == 2
    assert after.active_users >= 1


# -- the hourly view the admin reports read (svc_ledger.hours) -------------------------------


def _view_of(entries: list[Entry], users: set[str]) -> list[tuple[str, tuple[str, ...], Amounts]]:
    """Entries of `users` summed by (user, hour, model, tier, API key, finish reason), sorted."""
    sums: dict[tuple[str, tuple[str, ...]], Amounts] = {}
    for entry in entries:
        if entry.user_id in users:
            key = (entry.user_id, entry.parts)
            sums[key] = add(sums.get(key, ZERO), entry.amounts)
    return sorted((user, parts, amounts) for (user, parts), amounts in sums.items())


async def test_the_hourly_view_is_exactly_the_months_totals_also_with_repeated_events(
    ledger: LedgerServiceAsyncStub,
    ledger_app: LedgerApp,
    producer: pulsar.Producer,
    alice: Person,
    bob: Person,
    admin_token: str,
) -> None:
    admin = admin_md(admin_token)
    day = datetime(2025, 3, 1, tzinfo=UTC) + timedelta(days=secrets.randbelow(300))
    kinds = [(alice, "parley-scripted", "stop"), (bob, "smollm2", "error"), (alice, "smollm2", "cancelled")]
    usages = [
        Usage(
            person.user_id, model, 10 * (i + 1), i, day + timedelta(hours=i % 5, minutes=i), finish_reason=end
        )
        for i, (person, model, end) in enumerate(kinds * 6)
    ]
    events = [u.event() for u in usages]
    # Every event twice, the second time in another batch: the view counts each once.
    publish(producer, events)
    publish(producer, events)
    start, end = _at(day), _at(day + timedelta(hours=5))

    async def turns() -> int:
        reply = await ledger.GetSpendReport(
            pb.GetSpendReportRequest(dimension=pb.SPEND_DIMENSION_USER, start_time=start, end_time=end),
            metadata=admin,
        )
        return sum(row.turns for row in reply.rows)

    assert await eventually(turns, lambda count: count >= len(usages)) == len(usages)
    reports, users = Reports(ledger_app.store), {alice.user_id, bob.user_id}
    window = (day, day + timedelta(hours=5))
    by_hour = _view_of(await reports.entries_by_hour(*window), users)
    from_accounts = _view_of(await reports.entries_from_accounts(None, *window), users)
    assert by_hour == from_accounts
    assert sum(amounts[0] for _user, _parts, amounts in by_hour) == len(usages)


async def test_months_recorded_before_the_view_are_projected_once_and_newer_totals_win(
    start_ledger: Callable[..., Any], producer: pulsar.Producer, alice: Person, history_servers: LocalStack
) -> None:
    keyspace = f"ledger_hours_{secrets.token_hex(4)}"
    app: LedgerApp = await start_ledger(keyspace=keyspace, subscription=f"ledger-{keyspace}")
    day = datetime(2025, 9, 1, tzinfo=UTC) + timedelta(days=secrets.randbelow(25))
    usages = [Usage(alice.user_id, "parley-scripted", 100, 0, day + timedelta(hours=h)) for h in range(3)]
    publish(producer, [u.event() for u in usages])
    reports, window = Reports(app.store), (day, day + timedelta(hours=3))
    await eventually(
        lambda: reports.entries_from_accounts([alice.user_id], *window), lambda entries: len(entries) == 3
    )
    await app.backfill.done.wait()
    expected = _view_of(await reports.entries_from_accounts(None, *window), {alice.user_id})

    # As if the ledger had recorded the month before the view existed: nothing in it.
    truncate = [f"TRUNCATE {keyspace}.{table}" for table in ("hour_users", "hour_months")]
    await asyncio.to_thread(run_cql, history_servers, truncate)
    assert await reports.entries_by_hour(*window) == []
    month = day.strftime("%Y-%m")
    assert month in await project_unmarked_months(app.store)
    assert _view_of(await reports.entries_by_hour(*window), {alice.user_id}) == expected
    assert month not in await project_unmarked_months(app.store), "a marked month is not projected again"

    # An older version of the month, written late (a slow writer), does not replace a newer one.
    hour = day.strftime("%Y-%m-%dT%H")
    current = await app.store.account(alice.user_id, month)
    stale = AccountMonth(current.version - 1, {f"{hour}|parley-scripted|free||stop": (99, 0, 0, 0, 0)})
    await app.store.put_hour_users(alice.user_id, stale, {hour})
    assert _view_of(await reports.entries_by_hour(*window), {alice.user_id}) == expected

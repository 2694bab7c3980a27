"""svc_ledger's Cassandra tables and the statements on them.

- `account_months`: one partition per user and month. Its rows are the line items (newest
  first, each keyed by its event id); its static columns are the month's totals (`totals`,
  one entry per hour, model, tier, API key and finish reason) and their `version`. A batch
  of new line items and the totals they add is one conditional batch on that partition:
  every item `IF NOT EXISTS` and the totals `IF version = <the version they were added to>`.
  Either all of it is written or none, so the totals are always exactly the sum of the
  partition's line items, however often an event is delivered (docs/adr/0013-ledger.md).
- `month_users` / `user_months`: who has a partition in which month (reports and the
  budgets' rebuild read the first, a user's listing the second).
- `turn_minutes`: one row per priced event by the minute it ended (the overview's turns
  per minute), keyed by event id, so a repeated event is the same row.
- `hour_users`: the admin reports' view, one partition per hour with a row per user who
  used Parley in it: that hour's entries of the user's month totals, as of a version of
  them. Every write of a row carries its month's version as the write timestamp
  (`USING TIMESTAMP version`), so the newest totals win whatever order writers land in,
  and a rewrite of the same version is the same row: it is always exactly some version
  of the month's totals, and the latest once its writer is done. Never DELETE from it
  without such a timestamp: a delete at wall-clock time would hide every later write.
  `hour_months` marks the months whose accounts have been projected into it.
- `budgets`: the limits of each budget, with an etag for SetBudget.
- `price_versions`: every price the ledger has used, so a catalog that changes one after
  the fact, or adds one that would apply backwards, is refused at start-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cassandra.cluster import Session as CqlSession
from cassandra.query import BatchStatement, BatchType, PreparedStatement

from parley_core.cassandra import execute, execute_all, execute_lwt
from parley_core.migrations import Migration
from parley_core.outbox import outbox_migration

MIGRATIONS: tuple[Migration, ...] = (
    outbox_migration(1),
    Migration(
        2,
        "line items with their month's totals, month users, turn minutes, budgets, price versions",
        (
            """CREATE TABLE IF NOT EXISTS {ks}.account_months (
                user_id text, month text, usage_time timestamp, event_id text,
                turn text, model text, tier text, api_key text, finish_reason text,
                input_tokens bigint, output_tokens bigint, cost_micros bigint, currency text,
                price_version text, estimated boolean, priced_time timestamp,
                version bigint static,
                totals map<text, frozen<tuple<bigint, bigint, bigint, bigint, bigint>>> static,
                PRIMARY KEY ((user_id, month), usage_time, event_id))
                WITH CLUSTERING ORDER BY (usage_time DESC, event_id DESC)""",
            """CREATE TABLE IF NOT EXISTS {ks}.month_users (
                month text, user_id text, PRIMARY KEY ((month), user_id))""",
            """CREATE TABLE IF NOT EXISTS {ks}.user_months (
                user_id text, month text, PRIMARY KEY ((user_id), month))
                WITH CLUSTERING ORDER BY (month DESC)""",
            """CREATE TABLE IF NOT EXISTS {ks}.turn_minutes (
                hour text, minute timestamp, event_id text, model text, finish_reason text,
                PRIMARY KEY ((hour), minute, event_id))""",
            """CREATE TABLE IF NOT EXISTS {ks}.budgets (
                scope text PRIMARY KEY, soft_limit bigint, hard_limit bigint,
                update_time timestamp, etag text)""",
            """CREATE TABLE IF NOT EXISTS {ks}.price_versions (
                model text, version text, effective_time timestamp, currency text,
                input_per_million bigint, output_per_million bigint, first_seen timestamp,
                PRIMARY KEY ((model), version))""",
        ),
    ),
    Migration(
        3,
        "hour_users: the admin reports' totals per hour and user; hour_months: months projected",
        (
            """CREATE TABLE IF NOT EXISTS {ks}.hour_users (
                hour text, user_id text, version bigint,
                totals frozen<map<text, frozen<tuple<bigint, bigint, bigint, bigint, bigint>>>>,
                PRIMARY KEY ((hour), user_id))""",
            """CREATE TABLE IF NOT EXISTS {ks}.hour_months (
                month text PRIMARY KEY, projected_time timestamp)""",
        ),
    ),
)

#: turns, input tokens, output tokens, cost in micro-units, turns billed by estimate.
Amounts = tuple[int, int, int, int, int]
ZERO: Amounts = (0, 0, 0, 0, 0)


def add(a: Amounts, b: Amounts) -> Amounts:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4])


def utc(value: datetime) -> datetime:
    """The driver returns naive UTC datetimes."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@dataclass(frozen=True)
class LineItemRow:
    """One priced event, as stored."""

    user_id: str
    month: str
    usage_time: datetime
    event_id: str
    turn: str
    model: str
    tier: str
    api_key: str
    finish_reason: str
    input_tokens: int
    output_tokens: int
    cost_micros: int
    currency: str
    price_version: str
    estimated: bool
    priced_time: datetime


@dataclass(frozen=True)
class AccountMonth:
    """A user's month: the totals' version (0 before the first item) and the totals."""

    version: int
    totals: Mapping[str, Amounts]


@dataclass(frozen=True)
class BudgetRow:
    scope: str
    soft_limit: int | None
    hard_limit: int | None
    update_time: datetime
    etag: str


@dataclass(frozen=True)
class PriceRow:
    model: str
    version: str
    effective_time: datetime | None
    currency: str
    input_per_million: int
    output_per_million: int


class LedgerStore:
    """Every statement svc_ledger runs; LOCAL_QUORUM, LWTs at LOCAL_SERIAL."""

    def __init__(self, session: CqlSession, keyspace: str) -> None:
        self._session = session
        ks = keyspace

        def prepare(cql: str) -> PreparedStatement:
            return session.prepare(cql.format(ks=ks))

        self._insert_item = prepare(
            "INSERT INTO {ks}.account_months (user_id, month, usage_time, event_id, turn, model, "
            "tier, api_key, finish_reason, input_tokens, output_tokens, cost_micros, currency, "
            "price_version, estimated, priced_time) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
        )
        self._first_totals = prepare(
            "UPDATE {ks}.account_months SET version = ?, totals = totals + ? "
            "WHERE user_id = ? AND month = ? IF version = null"
        )
        self._next_totals = prepare(
            "UPDATE {ks}.account_months SET version = ?, totals = totals + ? "
            "WHERE user_id = ? AND month = ? IF version = ?"
        )
        self._account = prepare(
            "SELECT version, totals FROM {ks}.account_months WHERE user_id = ? AND month = ? LIMIT 1"
        )
        self._items = prepare(
            "SELECT * FROM {ks}.account_months WHERE user_id = ? AND month = ? "
            "AND usage_time >= ? AND usage_time < ? LIMIT ?"
        )
        self._items_after = prepare(
            "SELECT * FROM {ks}.account_months WHERE user_id = ? AND month = ? "
            "AND (usage_time, event_id) < (?, ?) AND usage_time >= ? LIMIT ?"
        )
        self._add_month_user = prepare("INSERT INTO {ks}.month_users (month, user_id) VALUES (?, ?)")
        self._add_user_month = prepare("INSERT INTO {ks}.user_months (user_id, month) VALUES (?, ?)")
        self._user_months = prepare("SELECT month FROM {ks}.user_months WHERE user_id = ?")
        self._month_users = prepare("SELECT user_id FROM {ks}.month_users WHERE month = ?")
        self._add_minute = prepare(
            "INSERT INTO {ks}.turn_minutes (hour, minute, event_id, model, finish_reason) "
            "VALUES (?, ?, ?, ?, ?)"
        )
        self._minutes = prepare("SELECT minute, event_id FROM {ks}.turn_minutes WHERE hour = ?")
        self._put_hour_user = prepare(
            "INSERT INTO {ks}.hour_users (hour, user_id, version, totals) "
            "VALUES (?, ?, ?, ?) USING TIMESTAMP ?"
        )
        self._hour_users = prepare("SELECT user_id, totals FROM {ks}.hour_users WHERE hour = ?")
        self._months = prepare("SELECT DISTINCT month FROM {ks}.month_users")
        self._hour_month = prepare("SELECT month FROM {ks}.hour_months WHERE month = ?")
        self._add_hour_month = prepare("INSERT INTO {ks}.hour_months (month, projected_time) VALUES (?, ?)")
        self._budget = prepare(
            "SELECT scope, soft_limit, hard_limit, update_time, etag FROM {ks}.budgets WHERE scope = ?"
        )
        self._budgets = prepare("SELECT scope, soft_limit, hard_limit, update_time, etag FROM {ks}.budgets")
        self._create_budget = prepare(
            "INSERT INTO {ks}.budgets (scope, soft_limit, hard_limit, update_time, etag) "
            "VALUES (?, ?, ?, ?, ?) IF NOT EXISTS"
        )
        self._update_budget = prepare(
            "UPDATE {ks}.budgets SET soft_limit = ?, hard_limit = ?, update_time = ?, etag = ? "
            "WHERE scope = ? IF etag = ?"
        )
        self._delete_budget = prepare("DELETE FROM {ks}.budgets WHERE scope = ? IF etag = ?")
        self._prices = prepare(
            "SELECT model, version, effective_time, currency, input_per_million, output_per_million "
            "FROM {ks}.price_versions"
        )
        self._record_price = prepare(
            "INSERT INTO {ks}.price_versions (model, version, effective_time, currency, "
            "input_per_million, output_per_million, first_seen) VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
        )

    # -- line items and totals ------------------------------------------------------------

    async def account(self, user_id: str, month: str) -> AccountMonth:
        rows = await execute(self._session, self._account, (user_id, month))
        if not rows or rows[0].version is None:
            return AccountMonth(0, {})
        return AccountMonth(rows[0].version, _totals(rows[0].totals))

    async def add_items(
        self, account: AccountMonth, rows: Sequence[LineItemRow], additions: Mapping[str, Amounts]
    ) -> tuple[bool, set[str], AccountMonth]:
        """Write rows and add `additions` to the totals of `account`, all or nothing.

        Returns (applied, the event ids already there, the account as it is now): when not
        applied, either some rows exist (drop them and try again) or another writer moved the
        version first (try again from the returned account).
        """
        user_id, month = rows[0].user_id, rows[0].month
        batch = BatchStatement(batch_type=BatchType.LOGGED)
        for row in rows:
            batch.add(self._insert_item, _item_values(row))
        new_totals = {key: add(account.totals.get(key, ZERO), value) for key, value in additions.items()}
        if account.version == 0:
            batch.add(self._first_totals, (1, new_totals, user_id, month))
        else:
            batch.add(self._next_totals, (account.version + 1, new_totals, user_id, month, account.version))
        result = await execute(self._session, batch)
        if result and result[0][0]:
            merged = {**account.totals, **new_totals}
            return True, set(), AccountMonth(account.version + 1, merged)
        existing = {row.event_id for row in result if getattr(row, "event_id", None) is not None}
        current = result[0] if result else None
        if current is not None and getattr(current, "version", None) is not None:
            now = AccountMonth(current.version, _totals(current.totals))
        else:
            now = await self.account(user_id, month)
        return False, existing, now

    async def items(
        self,
        user_id: str,
        month: str,
        start: datetime,
        end: datetime,
        limit: int,
        after: tuple[datetime, str] | None = None,
    ) -> list[LineItemRow]:
        """Line items of the month in [start, end), newest first, after the given position."""
        if after is None:
            rows = await execute(self._session, self._items, (user_id, month, start, end, limit))
        else:
            # Newest first (time, then event id, both descending): what follows a position
            # is what sorts before it.
            # The position came from a page within [start, end), so it is below `end`.
            rows = await execute(
                self._session, self._items_after, (user_id, month, after[0], after[1], start, limit)
            )
        return [_item_of(row) for row in rows]

    async def add_month_user(self, month: str, user_id: str) -> None:
        await execute(self._session, self._add_month_user, (month, user_id))
        await execute(self._session, self._add_user_month, (user_id, month))

    async def user_months(self, user_id: str) -> list[str]:
        """The months the user has line items in, newest first."""
        return [row.month for row in await execute_all(self._session, self._user_months, (user_id,))]

    async def month_users(self, month: str) -> list[str]:
        return [row.user_id for row in await execute_all(self._session, self._month_users, (month,))]

    async def add_minutes(self, rows: Iterable[tuple[str, datetime, str, str, str]]) -> None:
        """(hour, minute, event id, model, finish reason) rows; a repeated row is the same row."""
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        count = 0
        for row in rows:
            batch.add(self._add_minute, row)
            count += 1
        if count:
            await execute(self._session, batch)

    async def minutes(self, hour: str) -> list[datetime]:
        """The minute of each event that ended in the hour."""
        return [utc(row.minute) for row in await execute_all(self._session, self._minutes, (hour,))]

    # -- the reports' hourly view ---------------------------------------------------------

    async def put_hour_users(self, user_id: str, account: AccountMonth, hours: Iterable[str]) -> None:
        """The hours' rows of `user_id` from `account` (their month's totals at a version)."""
        by_hour: dict[str, dict[str, Amounts]] = {hour: {} for hour in hours}
        for key, amounts in account.totals.items():
            hour, _, rest = key.partition("|")
            if hour in by_hour:
                by_hour[hour][rest] = amounts
        await asyncio.gather(
            *(
                execute(
                    self._session,
                    self._put_hour_user,
                    (hour, user_id, account.version, totals, account.version),
                )
                for hour, totals in by_hour.items()
                if totals and account.version > 0
            )
        )

    async def hour_users(self, hour: str) -> list[tuple[str, dict[str, Amounts]]]:
        """(user id, totals keyed model|tier|API key|finish reason) of each user in the hour."""
        rows = await execute_all(self._session, self._hour_users, (hour,))
        return [(row.user_id, _totals(row.totals)) for row in rows]

    async def months(self) -> list[str]:
        """Every month with line items (a scan of month_users' partition keys: one per month)."""
        return sorted(row.month for row in await execute_all(self._session, self._months))

    async def month_projected(self, month: str) -> bool:
        return bool(await execute(self._session, self._hour_month, (month,)))

    async def mark_month_projected(self, month: str, when: datetime) -> None:
        await execute(self._session, self._add_hour_month, (month, when))

    # -- budgets --------------------------------------------------------------------------

    async def budget(self, scope: str) -> BudgetRow | None:
        rows = await execute(self._session, self._budget, (scope,))
        return _budget_of(rows[0]) if rows else None

    async def budgets(self) -> list[BudgetRow]:
        return [_budget_of(row) for row in await execute_all(self._session, self._budgets)]

    async def put_budget(self, row: BudgetRow, expected_etag: str | None) -> bool:
        """Create (expected_etag None) or replace the budget whose etag is expected_etag."""
        if expected_etag is None:
            return await execute_lwt(
                self._session,
                self._create_budget,
                (row.scope, row.soft_limit, row.hard_limit, row.update_time, row.etag),
            )
        return await execute_lwt(
            self._session,
            self._update_budget,
            (row.soft_limit, row.hard_limit, row.update_time, row.etag, row.scope, expected_etag),
        )

    async def delete_budget(self, scope: str, expected_etag: str) -> bool:
        return await execute_lwt(self._session, self._delete_budget, (scope, expected_etag))

    # -- prices ---------------------------------------------------------------------------

    async def prices(self) -> list[PriceRow]:
        return [
            PriceRow(
                row.model,
                row.version,
                utc(row.effective_time) if row.effective_time is not None else None,
                row.currency,
                row.input_per_million,
                row.output_per_million,
            )
            for row in await execute_all(self._session, self._prices)
        ]

    async def record_price(self, row: PriceRow, first_seen: datetime) -> bool:
        """Record a price the first time it is seen; False when that version was recorded."""
        return await execute_lwt(
            self._session,
            self._record_price,
            (
                row.model,
                row.version,
                row.effective_time,
                row.currency,
                row.input_per_million,
                row.output_per_million,
                first_seen,
            ),
        )


def _totals(value: Any) -> dict[str, Amounts]:
    return {key: (int(v[0]), int(v[1]), int(v[2]), int(v[3]), int(v[4])) for key, v in (value or {}).items()}


def _item_values(row: LineItemRow) -> tuple[Any, ...]:
    return (
        row.user_id,
        row.month,
        row.usage_time,
        row.event_id,
        row.turn,
        row.model,
        row.tier,
        row.api_key,
        row.finish_reason,
        row.input_tokens,
        row.output_tokens,
        row.cost_micros,
        row.currency,
        row.price_version,
        row.estimated,
        row.priced_time,
    )


def _item_of(row: Any) -> LineItemRow:
    return LineItemRow(
        row.user_id,
        row.month,
        utc(row.usage_time),
        row.event_id,
        row.turn,
        row.model,
        row.tier,
        row.api_key,
        row.finish_reason,
        row.input_tokens,
        row.output_tokens,
        row.cost_micros,
        row.currency,
        row.price_version,
        bool(row.estimated),
        utc(row.priced_time),
    )


def _budget_of(row: Any) -> BudgetRow:
    return BudgetRow(row.scope, row.soft_limit, row.hard_limit, utc(row.update_time), row.etag)

"""What the ledger tells users and admins: usage, line items, spend reports, the overview.

Usage and reports add up totals whose entries are per hour, so a range is taken in whole
UTC hours, its start rounded down and its end up. A user's usage reads their months'
totals (svc_ledger.store `account_months`); the admin reports read the hourly view
(`hour_users`, svc_ledger.hours), one partition per hour of the range, so their cost
follows the users active in the range, not everyone who used Parley that month. Line items
are listed from the rows themselves, at their exact times.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from parley_core.errors import FieldViolation, invalid_argument
from parley_core.paging import decode_token, encode_token
from svc_ledger.store import ZERO, Amounts, LedgerStore, LineItemRow, add

#: Totals keys: hour, model, tier, API key, finish reason.
HOUR, MODEL, TIER, API_KEY, FINISH = range(5)


@dataclass(frozen=True)
class Entry:
    """One entry of a user's month: whose, which hour, model, tier, key, finish reason."""

    user_id: str
    parts: tuple[str, ...]
    amounts: Amounts


@dataclass
class Group:
    key: str
    amounts: Amounts = ZERO

    @property
    def cost(self) -> int:
        return self.amounts[3]


@dataclass
class Overview:
    active_users: int
    totals: Amounts
    failed_turns: int
    cancelled_turns: int
    #: model -> (turns, failed, cancelled, output tokens, cost)
    models: dict[str, tuple[int, int, int, int, int]] = field(default_factory=dict)
    top_users: list[Group] = field(default_factory=list)
    turns_per_minute: list[tuple[datetime, int]] = field(default_factory=list)


def hour_range(start: datetime, end: datetime) -> tuple[str, str]:
    """The range as totals-key hours: [first, last) with start rounded down, end up."""
    first = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    last = end.astimezone(UTC)
    if last != last.replace(minute=0, second=0, microsecond=0):
        last = last.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return first.strftime("%Y-%m-%dT%H"), last.strftime("%Y-%m-%dT%H")


def hours_of(start: datetime, end: datetime) -> list[str]:
    """Every totals-key hour in the range (whole hours, as `hour_range` takes them)."""
    first = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    _, last = hour_range(start, end)
    hours: list[str] = []
    while (hour := first.strftime("%Y-%m-%dT%H")) < last:
        hours.append(hour)
        first += timedelta(hours=1)
    return hours


def months_between(start: datetime, end: datetime) -> list[str]:
    """The months (UTC) that [start, end) touches, oldest first."""
    months: list[str] = []
    year, month = start.astimezone(UTC).year, start.astimezone(UTC).month
    last = end.astimezone(UTC) - timedelta(microseconds=1)
    while (year, month) <= (last.year, last.month):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def check_range(start: datetime, end: datetime, *, start_field: str = "start_time") -> None:
    if start >= end:
        raise invalid_argument([FieldViolation(start_field, "must be before end_time")])
    if end - start > timedelta(days=370):
        raise invalid_argument([FieldViolation(start_field, "a range is at most 370 days")])


class Reports:
    def __init__(self, store: LedgerStore) -> None:
        self._store = store
        self._parallel = asyncio.Semaphore(32)

    async def entries(self, users: list[str] | None, start: datetime, end: datetime) -> list[Entry]:
        """The totals entries in [start, end) hours, of `users` (None: everyone, from the
        hourly view)."""
        if users is None:
            return await self.entries_by_hour(start, end)
        return await self.entries_from_accounts(users, start, end)

    async def entries_by_hour(self, start: datetime, end: datetime) -> list[Entry]:
        """Everyone's totals entries in [start, end) hours, from the hourly view."""

        async def read(hour: str) -> list[Entry]:
            async with self._parallel:
                rows = await self._store.hour_users(hour)
            return [
                Entry(user_id, (hour, *key.split("|")), amounts)
                for user_id, totals in rows
                for key, amounts in totals.items()
            ]

        found = await asyncio.gather(*(read(hour) for hour in hours_of(start, end)))
        return [entry for entries in found for entry in entries]

    async def entries_from_accounts(
        self, users: list[str] | None, start: datetime, end: datetime
    ) -> list[Entry]:
        """The totals entries in [start, end) hours, of `users` (None: every user of each
        month), from the months' totals themselves."""
        first, last = hour_range(start, end)
        pairs: list[tuple[str, str]] = []
        for month in months_between(start, end):
            for user_id in users if users is not None else await self._store.month_users(month):
                pairs.append((user_id, month))

        async def read(user_id: str, month: str) -> list[Entry]:
            async with self._parallel:
                account = await self._store.account(user_id, month)
            return [
                Entry(user_id, tuple(key.split("|")), amounts)
                for key, amounts in account.totals.items()
                if first <= key[:13] < last
            ]

        found = await asyncio.gather(*(read(user_id, month) for user_id, month in pairs))
        return [entry for entries in found for entry in entries]

    async def usage(self, user_id: str, start: datetime, end: datetime) -> tuple[Amounts, list[Group]]:
        """The user's totals, and per model (largest cost first)."""
        entries = await self.entries([user_id], start, end)
        total = ZERO
        for entry in entries:
            total = add(total, entry.amounts)
        return total, grouped(entries, lambda e: e.parts[MODEL])

    async def spend(self, key: Callable[[Entry], str], start: datetime, end: datetime) -> list[Group]:
        return grouped(await self.entries(None, start, end), key)

    async def overview(self, start: datetime, now: datetime) -> Overview:
        entries = await self.entries(None, start, now)
        totals = ZERO
        models: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
        failed = cancelled = 0
        for entry in entries:
            totals = add(totals, entry.amounts)
            turns, _, output, cost, _ = entry.amounts
            model = models[entry.parts[MODEL]]
            model[0] += turns
            model[3] += output
            model[4] += cost
            if entry.parts[FINISH] == "error":
                model[1] += turns
                failed += turns
            elif entry.parts[FINISH] == "cancelled":
                model[2] += turns
                cancelled += turns
        users = grouped(entries, lambda e: f"users/{e.user_id}")
        return Overview(
            active_users=len([u for u in users if u.amounts[0] > 0]),
            totals=totals,
            failed_turns=failed,
            cancelled_turns=cancelled,
            models={name: (m[0], m[1], m[2], m[3], m[4]) for name, m in sorted(models.items())},
            top_users=users[:10],
            turns_per_minute=await self.turns_per_minute(now),
        )

    async def turns_per_minute(self, now: datetime) -> list[tuple[datetime, int]]:
        """Turns per minute over the 60 minutes before `now`'s minute, oldest first."""
        end = now.astimezone(UTC).replace(second=0, microsecond=0)
        minutes = [end - timedelta(minutes=60 - i) for i in range(60)]
        hours = sorted({m.strftime("%Y-%m-%dT%H") for m in minutes})
        counts: dict[datetime, int] = dict.fromkeys(minutes, 0)
        for found in await asyncio.gather(*(self._store.minutes(hour) for hour in hours)):
            for minute in found:
                if minute in counts:
                    counts[minute] += 1
        return sorted(counts.items())

    async def line_items(
        self, user_id: str, start: datetime | None, end: datetime | None, size: int, token: str
    ) -> tuple[list[LineItemRow], str]:
        """A page of the user's line items in [start, end), newest first."""
        position = decode_token(token)
        after = _position(position)
        lower = start or datetime(1970, 1, 1, tzinfo=UTC)
        upper = end or datetime(9999, 1, 1, tzinfo=UTC)
        items: list[LineItemRow] = []
        for month in _months_newest_first(await self._store.user_months(user_id), lower, upper, after):
            want = size + 1 - len(items)
            resume = after if after is not None and after[2] == month else None
            rows = await self._store.items(
                user_id, month, lower, upper, want, (resume[0], resume[1]) if resume else None
            )
            items += rows
            if len(items) > size:
                break
        page, more = items[:size], len(items) > size
        if not more:
            return page, ""
        last = page[-1]
        return page, encode_token(
            {"m": last.month, "t": int(last.usage_time.timestamp() * 1000), "e": last.event_id}
        )


def grouped(entries: list[Entry], key: Callable[[Entry], str]) -> list[Group]:
    """Entries summed by key, largest cost first (then by key)."""
    sums: dict[str, Amounts] = defaultdict(lambda: ZERO)
    for entry in entries:
        sums[key(entry)] = add(sums[key(entry)], entry.amounts)
    return sorted((Group(k, v) for k, v in sums.items()), key=lambda g: (-g.cost, g.key))


def _position(position: Mapping[str, object]) -> tuple[datetime, str, str] | None:
    if not position:
        return None
    month, millis, event = position.get("m"), position.get("t"), position.get("e")
    if not isinstance(month, str) or not isinstance(millis, int) or not isinstance(event, str):
        raise invalid_argument([FieldViolation("page_token", "is not a token this API returned")])
    return datetime.fromtimestamp(millis / 1000, UTC), event, month


def _months_newest_first(
    months: list[str], lower: datetime, upper: datetime, after: tuple[datetime, str, str] | None
) -> Iterator[str]:
    first, last = lower.strftime("%Y-%m"), (upper - timedelta(microseconds=1)).strftime("%Y-%m")
    for month in months:
        if first <= month <= last and (after is None or month <= after[2]):
            yield month

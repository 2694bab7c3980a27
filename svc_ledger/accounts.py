"""Priced events into their users' months, each exactly once, and the budgets kept in step.

Events are grouped by user and month (one Cassandra partition). Each group is written as
conditional batches (store.LedgerStore.add_items): the new line items and what they add to
the month's totals, applied together or not at all. An event already there is dropped
from the batch and the rest is tried again, so a redelivered or replayed event adds
nothing; another writer that moved the totals first makes the batch retry from the
totals it left. Then, for the whole batch at once, the turn minutes are written and the
hours the events fall in are copied from each month's totals into the reports' hourly view
(store.LedgerStore.put_hour_users), also when every event was a duplicate (a crash may
have come between the writes), and the budgets' Redis state is settled from the months'
totals.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from parley_core.budgets import BudgetScope, BudgetState, Contribution
from svc_ledger.billing import Priced
from svc_ledger.store import ZERO, AccountMonth, Amounts, LedgerStore, LineItemRow, add

#: Line items per conditional batch (Cassandra warns about, then refuses, large batches).
_CHUNK = 50
#: Tries of one batch against other writers before giving up (the event is redelivered).
_TRIES = 20


@dataclass(frozen=True)
class Recorded:
    """What a call to `record` did: events written, and events that were there already."""

    new: int
    duplicates: int


def totals_by(totals: Mapping[str, Amounts], part: int) -> dict[str, Amounts]:
    """Sum the month's totals by one part of their keys: 0 hour, 1 model, 2 tier, 3 API key,
    4 finish reason."""
    sums: dict[str, Amounts] = defaultdict(lambda: ZERO)
    for key, amounts in totals.items():
        sums[key.split("|")[part]] = add(sums[key.split("|")[part]], amounts)
    return dict(sums)


def contributions(user_id: str, month: str, account: AccountMonth) -> list[Contribution]:
    """The user's share of each budget their month counts towards."""
    if account.version == 0:
        return []
    shares = [(BudgetScope.user(user_id), sum(a[3] for a in account.totals.values()))]
    shares += [
        (BudgetScope.api_key(user_id, key), amounts[3])
        for key, amounts in totals_by(account.totals, 3).items()
        if key
    ]
    shares += [(BudgetScope.tier(tier), amounts[3]) for tier, amounts in totals_by(account.totals, 2).items()]
    return [Contribution(scope, month, user_id, account.version, spent) for scope, spent in shares]


class Accounts:
    def __init__(
        self,
        store: LedgerStore,
        budgets: BudgetState,
        *,
        written: Callable[[Sequence[LineItemRow]], object] = lambda _items: None,
        cached_months: int = 10_000,
    ) -> None:
        self._store = store
        self._budgets = budgets
        #: Told the line items each applied batch wrote, as soon as it is applied (a later
        #: failure of the same call does not unwrite them).
        self._written = written
        # The months this instance wrote last: one user's events come to one instance, so
        # the next batch usually starts from the right version without a read.
        self._cache: OrderedDict[tuple[str, str], AccountMonth] = OrderedDict()
        self._cached_months = cached_months
        self._known_users: set[tuple[str, str]] = set()
        self._parallel = asyncio.Semaphore(16)

    async def record(self, priced: Sequence[Priced]) -> Recorded:
        """Write the events into their months, then (once for the whole batch) their minutes
        and the budgets: reservations released and spent set, in one Redis call."""
        groups: dict[tuple[str, str], dict[str, Priced]] = defaultdict(dict)
        for event in priced:
            groups[(event.item.user_id, event.item.month)].setdefault(event.item.event_id, event)
        months = await asyncio.gather(
            *(
                self._record_month(user, month, list(events.values()))
                for (user, month), events in groups.items()
            )
        )
        unique = [event for events in groups.values() for event in events.values()]
        # The minutes, and each month's hours copied into the reports' view: every write at
        # once, none waiting on another (a month's version orders its own rows).
        await asyncio.gather(
            *(
                self._store.add_minutes(rows[first : first + _CHUNK * 2])
                for rows in _minute_rows(unique).values()
                for first in range(0, len(rows), _CHUNK * 2)
            ),
            *(
                self._store.put_hour_users(
                    user_id, account, {event.totals_key.partition("|")[0] for event in events.values()}
                )
                for ((user_id, _month), events), (_, account) in zip(groups.items(), months, strict=True)
            ),
        )
        await self._budgets.settle(
            sorted({e.item.turn.rsplit("/", 1)[-1] for e in unique}),
            [
                share
                for ((user_id, month), _), (_, account) in zip(groups.items(), months, strict=True)
                for share in contributions(user_id, month, account)
            ],
        )
        new = sum(written for written, _ in months)
        return Recorded(new, len(priced) - new)

    async def _record_month(self, user_id: str, month: str, events: list[Priced]) -> tuple[int, AccountMonth]:
        """Write one user's events of one month; how many were new, and the month after."""
        async with self._parallel:
            if (month, user_id) not in self._known_users:
                await self._store.add_month_user(month, user_id)
                self._known_users.add((month, user_id))
            account = self._cache.pop((user_id, month), None) or await self._store.account(user_id, month)
            new = 0
            try:
                for first in range(0, len(events), _CHUNK):
                    written, account = await self._write(account, events[first : first + _CHUNK])
                    new += written
            finally:
                self._remember(user_id, month, account)
            return new, account

    async def _write(self, account: AccountMonth, events: list[Priced]) -> tuple[int, AccountMonth]:
        """Write the events not yet written; how many were new, and the account after."""
        for _ in range(_TRIES):
            if not events:
                return 0, account
            additions: dict[str, Amounts] = defaultdict(lambda: ZERO)
            for event in events:
                additions[event.totals_key] = add(additions[event.totals_key], event.amounts)
            applied, existing, account = await self._store.add_items(
                account, [e.item for e in events], additions
            )
            if applied:
                self._written([e.item for e in events])
                return len(events), account
            events = [e for e in events if e.item.event_id not in existing]
        raise RuntimeError(f"the month kept changing under {_TRIES} tries; the events will come again")

    def _remember(self, user_id: str, month: str, account: AccountMonth) -> None:
        self._cache[(user_id, month)] = account
        while len(self._cache) > self._cached_months:
            self._cache.popitem(last=False)

    def forget_cached(self) -> None:
        """Read every month afresh (after a restart of the consumer, say)."""
        self._cache.clear()


def _minute_rows(events: Iterable[Priced]) -> dict[str, list[tuple[str, datetime, str, str, str]]]:
    """The events' turn_minutes rows, by hour (one partition each)."""
    rows: dict[str, list[tuple[str, datetime, str, str, str]]] = defaultdict(list)
    for event in events:
        item = event.item
        minute = item.usage_time.replace(second=0, microsecond=0)
        hour = minute.strftime("%Y-%m-%dT%H")
        rows[hour].append((hour, minute, item.event_id, item.model, item.finish_reason))
    return rows

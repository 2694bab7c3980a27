"""The admin reports' hourly view (store `hour_users`): a row per hour and user with that
hour's entries of the user's month totals.

Accounts keeps it as it records events. Months recorded before the view existed (a ledger
upgraded in place) are projected once, in the background after start-up: every user of
each month not yet marked in `hour_months` has their whole month copied, then the month is
marked. Rows carry their month's version as write timestamp, so a projection racing the
consumer never puts older totals over newer ones, and running it twice changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import structlog

from svc_ledger.store import LedgerStore

_log = structlog.get_logger("svc_ledger.hours")

#: Users of a month projected at once.
_PARALLEL = 16


async def project_month(store: LedgerStore, month: str) -> int:
    """Copy every hour of every user's month into the view; how many users it had."""
    users = await store.month_users(month)
    parallel = asyncio.Semaphore(_PARALLEL)

    async def one(user_id: str) -> None:
        async with parallel:
            account = await store.account(user_id, month)
            await store.put_hour_users(user_id, account, {key.partition("|")[0] for key in account.totals})

    await asyncio.gather(*(one(user_id) for user_id in users))
    return len(users)


async def project_unmarked_months(store: LedgerStore) -> list[str]:
    """Project each month with line items that is not marked yet, then mark it."""
    projected: list[str] = []
    for month in await store.months():
        if await store.month_projected(month):
            continue
        users = await project_month(store, month)
        await store.mark_month_projected(month, datetime.now(UTC))
        _log.info("month projected into the hourly view", month=month, users=users)
        projected.append(month)
    return projected


class HourlyBackfill:
    """`project_unmarked_months` once in the background; retried after a failure."""

    def __init__(self, store: LedgerStore, retry_s: float = 30.0) -> None:
        self._store = store
        self._retry_s = retry_s
        self._task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ledger-hourly-backfill")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await project_unmarked_months(self._store)
            except Exception as error:
                _log.warning("hourly view backfill failed; trying again", error=repr(error))
                await asyncio.sleep(self._retry_s)
                continue
            self.done.set()
            return

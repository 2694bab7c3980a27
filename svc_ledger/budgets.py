"""Budgets: their limits (Cassandra, with an etag), where each stands, and the Redis state
the router reserves against (parley_core.budgets), rebuilt from the ledger when Redis lost it.

Spent is read from the ledger's own totals (exact, Cassandra); reserved from Redis. The
keeper task checks every `budget_check_s` that Redis still has the state's `ready` marker;
without it (Redis restarted empty, or the first start) it copies every budget's limits and
every user's share of this month's spending into Redis, then sets the marker, which lets
the routers admit turns again. Every `budget_sync_s` it copies the limits again, so a
SetBudget whose Redis write was lost is repaired.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import structlog

from parley_core.budgets import BudgetLimits, BudgetScope, BudgetState, month_of
from parley_core.errors import RpcError
from svc_ledger.accounts import contributions, totals_by
from svc_ledger.settings import LedgerSettings
from svc_ledger.store import BudgetRow, LedgerStore

_log = structlog.get_logger("svc_ledger.budgets")


@dataclass(frozen=True)
class Standing:
    """A budget (None: no limits set) and where it stands this month."""

    scope: BudgetScope
    row: BudgetRow | None
    spent: int
    reserved: int

    @property
    def exhausted(self) -> bool:
        hard = self.row.hard_limit if self.row else None
        return hard is not None and self.spent + self.reserved >= hard

    @property
    def warning(self) -> bool:
        soft = self.row.soft_limit if self.row else None
        return soft is not None and self.spent + self.reserved >= soft


class Budgets:
    def __init__(self, settings: LedgerSettings, store: LedgerStore, state: BudgetState) -> None:
        self._settings = settings
        self._store = store
        self._state = state
        self._task: asyncio.Task[None] | None = None
        self.rebuilds = 0

    async def set(self, scope: BudgetScope, limits: BudgetLimits, etag: str) -> BudgetRow | None:
        """Store the limits (both None: remove the budget); ABORTED when `etag` is stale."""
        current = await self._store.budget(scope.key)
        if etag and (current is None or current.etag != etag):
            raise _stale(scope)
        now = datetime.now(UTC)
        row: BudgetRow | None = None
        if limits.soft is None and limits.hard is None:
            done = current is None or await self._store.delete_budget(scope.key, current.etag)
        else:
            row = BudgetRow(scope.key, limits.soft, limits.hard, now, secrets.token_urlsafe(12))
            done = await self._store.put_budget(row, current.etag if current else None)
        if not done:
            raise _stale(scope)
        await self._state.set_limits(scope, limits)
        return row

    async def standing(self, scope: BudgetScope) -> Standing:
        month = month_of(datetime.now(UTC))
        row = await self._store.budget(scope.key)
        spent = await self.spent(scope, month)
        reserved = (await self._state.standing(scope, month)).reserved
        return Standing(scope, row, spent, reserved)

    async def spent(self, scope: BudgetScope, month: str) -> int:
        """What the ledger has priced against the budget in the month, from its totals."""
        if scope.kind == "user":
            account = await self._store.account(scope.id, month)
            return sum(amounts[3] for amounts in account.totals.values())
        if scope.kind == "api_key":
            user_id, key = scope.id.split("/", 1)
            account = await self._store.account(user_id, month)
            return totals_by(account.totals, 3).get(key, (0, 0, 0, 0, 0))[3]
        total = 0
        for user_id in await self._store.month_users(month):
            account = await self._store.account(user_id, month)
            total += totals_by(account.totals, 2).get(scope.id, (0, 0, 0, 0, 0))[3]
        return total

    # -- the Redis state ------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep(), name="budget-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _keep(self) -> None:
        last_sync = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if not await self._state.is_ready():
                    await self.rebuild()
                elif loop.time() - last_sync >= self._settings.budget_sync_s:
                    await self._copy_limits()
                    last_sync = loop.time()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                _log.warning("keeping the budget state failed; will try again", error=type(error).__name__)
            await asyncio.sleep(self._settings.budget_check_s)

    async def rebuild(self) -> None:
        """Copy the limits and this month's spending into Redis, then mark the state ready."""
        started = datetime.now(UTC)
        month = month_of(started)
        await self._copy_limits()
        users = await self._store.month_users(month)
        for user_id in users:
            account = await self._store.account(user_id, month)
            await self._state.settle((), contributions(user_id, month, account))
        await self._state.mark_ready(f"rebuilt by {socket.gethostname()} at {started.isoformat()}")
        self.rebuilds += 1
        _log.info("budget state rebuilt", month=month, users=len(users))

    async def _copy_limits(self) -> None:
        for row in await self._store.budgets():
            await self._state.set_limits(
                BudgetScope.from_key(row.scope), BudgetLimits(row.soft_limit, row.hard_limit)
            )


def _stale(scope: BudgetScope) -> RpcError:
    return RpcError(
        grpc.StatusCode.ABORTED,
        "ETAG_MISMATCH",
        f"{scope.name} changed since that etag was read; read it again",
        metadata={"budget": scope.name},
    )

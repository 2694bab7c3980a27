"""The wire layer of svc_ledger: requests in, domain calls, responses out.

Who may read what: a user reads their own usage, line items and budgets (and their API
keys' budgets), with the `usage.read` scope; another user's are PERMISSION_DENIED before
anything is read. Admins read anyone's; spend reports, the overview, tier budgets and
SetBudget are theirs alone, and so is the system's health (probed at each call).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from parley.common.v1 import common_pb2
from parley.ledger.v1 import ledger_pb2 as pb
from parley_core.auth import Principal, current_principal, permission_denied, require_admin, require_scope
from parley_core.budgets import BudgetLimits, BudgetScope
from parley_core.errors import FieldViolation, invalid_argument
from parley_core.paging import offset_page, page_size
from parley_core.servicer import add_servicer
from parley_core.wire import from_timestamp, parse_name, timestamp
from svc_ledger.budgets import Budgets, Standing
from svc_ledger.health import Component, Kind, State, SystemHealth
from svc_ledger.pricing import PriceBook
from svc_ledger.reports import API_KEY, HOUR, MODEL, TIER, Group, Reports, check_range
from svc_ledger.store import Amounts, BudgetRow, LineItemRow

SERVICE = pb.DESCRIPTOR.services_by_name["LedgerService"]

Context = grpc.aio.ServicerContext[Any, Any]

_DIMENSIONS = {
    pb.SPEND_DIMENSION_UNSPECIFIED: lambda e: e.parts[HOUR][:10],
    pb.SPEND_DIMENSION_DAY: lambda e: e.parts[HOUR][:10],
    pb.SPEND_DIMENSION_USER: lambda e: f"users/{e.user_id}",
    pb.SPEND_DIMENSION_TIER: lambda e: e.parts[TIER],
    pb.SPEND_DIMENSION_MODEL: lambda e: f"models/{e.parts[MODEL]}",
    pb.SPEND_DIMENSION_API_KEY: lambda e: (
        f"users/{e.user_id}/apiKeys/{e.parts[API_KEY]}" if e.parts[API_KEY] else ""
    ),
}


class LedgerServiceServicer:
    """parley.ledger.v1.LedgerService."""

    def __init__(self, prices: PriceBook, reports: Reports, budgets: Budgets, health: SystemHealth) -> None:
        self._prices = prices
        self._reports = reports
        self._budgets = budgets
        self._health = health

    async def GetUsage(self, request: pb.GetUsageRequest, context: Context) -> pb.GetUsageResponse:
        user_id = _readable_user(request.name, "name")
        now = datetime.now(UTC)
        start = _time(request, "start_time") or now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = _time(request, "end_time") or now
        check_range(start, end)
        total, models = await self._reports.usage(user_id, start, end)
        return pb.GetUsageResponse(
            usage=_usage(total),
            cost=self._money(total[3]),
            models=[
                pb.ModelUsage(
                    model=f"models/{g.key}",
                    turns=g.amounts[0],
                    usage=_usage(g.amounts),
                    cost=self._money(g.cost),
                )
                for g in models
            ],
        )

    async def ListLineItems(
        self, request: pb.ListLineItemsRequest, context: Context
    ) -> pb.ListLineItemsResponse:
        user_id = _readable_user(request.parent, "parent")
        size = page_size(request.page_size, 100, 1000)
        start, end = _time(request, "start_time"), _time(request, "end_time")
        if start is not None and end is not None and start >= end:
            raise invalid_argument([FieldViolation("start_time", "must be before end_time")])
        items, token = await self._reports.line_items(user_id, start, end, size, request.page_token)
        return pb.ListLineItemsResponse(
            line_items=[_line_item(item) for item in items], next_page_token=token
        )

    async def GetSpendReport(
        self, request: pb.GetSpendReportRequest, context: Context
    ) -> pb.GetSpendReportResponse:
        _admin()
        if request.dimension not in _DIMENSIONS:
            raise invalid_argument([FieldViolation("dimension", "is not a SpendDimension")])
        size = page_size(request.page_size, 100, 1000)
        now = datetime.now(UTC)
        start = _time(request, "start_time") or now - timedelta(days=30)
        end = _time(request, "end_time") or now
        check_range(start, end)
        groups = await self._reports.spend(_DIMENSIONS[request.dimension], start, end)
        if request.dimension in (pb.SPEND_DIMENSION_DAY, pb.SPEND_DIMENSION_UNSPECIFIED):
            groups.sort(key=lambda g: g.key)
        page, token = offset_page(groups, size, request.page_token)
        return pb.GetSpendReportResponse(rows=[self._row(g) for g in page], next_page_token=token)

    async def SetBudget(self, request: pb.SetBudgetRequest, context: Context) -> pb.SetBudgetResponse:
        _admin()
        wanted = request.budget
        scope = _scope(wanted.name, "budget.name", _caller())
        limits = BudgetLimits(
            self._micros(wanted, "soft_limit", "budget.soft_limit"),
            self._micros(wanted, "hard_limit", "budget.hard_limit"),
        )
        if limits.soft is not None and limits.hard is not None and limits.soft > limits.hard:
            raise invalid_argument([FieldViolation("budget.soft_limit", "must not be more than hard_limit")])
        row = await self._budgets.set(scope, limits, wanted.etag)
        return pb.SetBudgetResponse(budget=self._budget(scope, row))

    async def GetBudget(self, request: pb.GetBudgetRequest, context: Context) -> pb.GetBudgetResponse:
        principal = _caller()
        scope = _scope(request.name, "name", principal)
        if not principal.is_admin and (scope.kind == "tier" or scope.owner != principal.user_id):
            raise permission_denied("callers may only read their own budgets", "NOT_OWNER")
        standing = await self._budgets.standing(scope)
        return pb.GetBudgetResponse(
            budget=self._budget(scope, standing.row),
            spent=self._money(standing.spent),
            reserved=self._money(standing.reserved),
            state=_state(standing),
        )

    async def GetAdminOverview(
        self, request: pb.GetAdminOverviewRequest, context: Context
    ) -> pb.GetAdminOverviewResponse:
        _admin()
        now = datetime.now(UTC)
        start = _time(request, "start_time") or now - timedelta(hours=24)
        check_range(start, now)
        overview = await self._reports.overview(start, now)
        return pb.GetAdminOverviewResponse(
            active_users=overview.active_users,
            turns=overview.totals[0],
            usage=_usage(overview.totals),
            cost=self._money(overview.totals[3]),
            models=[
                pb.ModelHealth(
                    model=f"models/{name}",
                    turns=turns,
                    failed_turns=failed,
                    cancelled_turns=cancelled,
                    output_tokens=output,
                    cost=self._money(cost),
                )
                for name, (turns, failed, cancelled, output, cost) in overview.models.items()
            ],
            top_users=[self._row(g) for g in overview.top_users],
            failed_turns=overview.failed_turns,
            cancelled_turns=overview.cancelled_turns,
            turns_per_minute=[
                pb.MinuteTurns(minute=timestamp(minute), turns=turns)
                for minute, turns in overview.turns_per_minute
            ],
        )

    async def GetSystemHealth(
        self, request: pb.GetSystemHealthRequest, context: Context
    ) -> pb.GetSystemHealthResponse:
        _admin()
        report = await self._health.check(context.time_remaining())
        return pb.GetSystemHealthResponse(
            components=[_component(c) for c in report.components], check_time=timestamp(report.check_time)
        )

    # -- conversions ----------------------------------------------------------------------

    def _money(self, micros: int) -> common_pb2.Money:
        return common_pb2.Money(currency_code=self._prices.currency, micros=micros)

    def _micros(self, budget: pb.Budget, field: str, path: str) -> int | None:
        if not budget.HasField(field):
            return None
        money: common_pb2.Money = getattr(budget, field)
        if money.currency_code != self._prices.currency:
            raise invalid_argument(
                [FieldViolation(f"{path}.currency_code", f"must be {self._prices.currency}")]
            )
        if money.micros < 0:
            raise invalid_argument([FieldViolation(f"{path}.micros", "must not be negative")])
        return money.micros

    def _budget(self, scope: BudgetScope, row: BudgetRow | None) -> pb.Budget:
        budget = pb.Budget(name=scope.name)
        if row is None:
            return budget
        if row.soft_limit is not None:
            budget.soft_limit.CopyFrom(self._money(row.soft_limit))
        if row.hard_limit is not None:
            budget.hard_limit.CopyFrom(self._money(row.hard_limit))
        budget.update_time.FromDatetime(row.update_time)
        budget.etag = row.etag
        return budget

    def _row(self, group: Group) -> pb.SpendRow:
        return pb.SpendRow(
            key=group.key, turns=group.amounts[0], usage=_usage(group.amounts), cost=self._money(group.cost)
        )


def _caller() -> Principal:
    principal = current_principal()
    require_scope(principal, "usage.read")
    return principal


def _admin() -> Principal:
    principal = _caller()
    require_admin(principal)
    return principal


def _readable_user(name: str, field: str) -> str:
    """The user `name` means, if the caller may read their usage."""
    principal = _caller()
    if name == "users/me":
        return principal.user_id
    user_id = parse_name(name, "users/{user}", field)["user"]
    if user_id != principal.user_id and not principal.is_admin:
        raise permission_denied("callers may only read their own usage", "NOT_OWNER")
    return user_id


def _scope(name: str, field: str, principal: Principal) -> BudgetScope:
    if name.startswith("users/me/"):
        name = f"users/{principal.user_id}/" + name.removeprefix("users/me/")
    scope = BudgetScope.parse(name)
    if scope is None:
        raise invalid_argument(
            [
                FieldViolation(
                    field,
                    "must be users/{user}/budget, users/{user}/apiKeys/{api_key}/budget "
                    "or tiers/{tier}/budget",
                )
            ]
        )
    return scope


def _time(request: Any, field: str) -> datetime | None:
    return from_timestamp(getattr(request, field), request.HasField(field))


def _usage(amounts: Amounts) -> common_pb2.TokenUsage:
    return common_pb2.TokenUsage(input_tokens=amounts[1], output_tokens=amounts[2])


def _state(standing: Standing) -> pb.BudgetState:
    if standing.exhausted:
        return pb.BUDGET_STATE_EXHAUSTED
    return pb.BUDGET_STATE_WARNING if standing.warning else pb.BUDGET_STATE_OK


_KINDS = {
    Kind.SERVICE: pb.COMPONENT_KIND_SERVICE,
    Kind.EDGE_CLUSTER: pb.COMPONENT_KIND_EDGE_CLUSTER,
    Kind.MODEL: pb.COMPONENT_KIND_MODEL,
    Kind.SEARCH_INDEX: pb.COMPONENT_KIND_SEARCH_INDEX,
}
_STATES = {
    State.HEALTHY: pb.HEALTH_STATE_HEALTHY,
    State.DEGRADED: pb.HEALTH_STATE_DEGRADED,
    State.UNHEALTHY: pb.HEALTH_STATE_UNHEALTHY,
    State.UNKNOWN: pb.HEALTH_STATE_UNKNOWN,
}


def _component(component: Component) -> pb.ComponentHealth:
    wire = pb.ComponentHealth(
        name=component.name,
        kind=_KINDS[component.kind],
        state=_STATES[component.state],
        detail=component.detail,
    )
    lag = component.index_lag
    if lag is not None:
        wire.index_lag.backlog_events = lag.backlog_events
        if lag.oldest_event_age is not None:
            wire.index_lag.oldest_event_age.FromTimedelta(lag.oldest_event_age)
    return wire


def _line_item(item: LineItemRow) -> pb.LineItem:
    return pb.LineItem(
        name=f"users/{item.user_id}/lineItems/{item.event_id}",
        turn=item.turn,
        model=f"models/{item.model}",
        usage=common_pb2.TokenUsage(input_tokens=item.input_tokens, output_tokens=item.output_tokens),
        cost=common_pb2.Money(currency_code=item.currency, micros=item.cost_micros),
        price_version=item.price_version,
        usage_time=timestamp(item.usage_time),
        usage_source=pb.USAGE_SOURCE_ESTIMATED if item.estimated else pb.USAGE_SOURCE_MODEL,
        api_key=f"users/{item.user_id}/apiKeys/{item.api_key}" if item.api_key else "",
        tier=item.tier,
        finish_reason=item.finish_reason,
    )


async def register(server: grpc.aio.Server, servicer: LedgerServiceServicer) -> Sequence[str]:
    """Add svc_ledger's servicers to server; the names are served by health and reflection."""
    return [add_servicer(server, SERVICE, servicer)]

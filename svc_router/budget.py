"""Budgets at admission: a turn holds its largest possible cost on its monthly budgets first.

Right after the rate limits admit a turn, and before anything is written, the turn reserves
the most it could cost (`largest_cost`) on the budgets that apply to it: its user's, its API
key's (when it runs with one) and its tier's (`parley_core.budgets`, one Lua call). A hard
limit the reservation would pass refuses the turn (RESOURCE_EXHAUSTED, BUDGET_EXHAUSTED,
RetryInfo until the next month); a soft limit becomes a warning in the turn's TurnStarted.
The ledger settles the reservation when it prices the turn's usage event; a turn that ends
without one (refused after reserving, failed before it started) releases it here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import grpc
import structlog
from prometheus_client import CollectorRegistry, Counter

from parley_core.auth import Principal
from parley_core.budgets import BudgetScope, BudgetState, BudgetStateUnavailableError, month_of
from parley_core.catalog import Catalog, CatalogModel
from parley_core.errors import RpcError
from svc_router.turns import BudgetWarning

__all__ = ["TurnBudgets", "largest_cost", "models_of_turn", "next_month"]

_log = structlog.get_logger("svc_router.budget")


def models_of_turn(catalog: Catalog, model: CatalogModel) -> tuple[CatalogModel, ...]:
    """The model and every model it may fall back to (theirs too), each once, in try order."""
    found: dict[str, CatalogModel] = {}
    waiting = [model]
    while waiting:
        current = waiting.pop(0)
        if current.name in found:
            continue
        found[current.name] = current
        waiting.extend(catalog.model(name) for name in current.fallbacks)
    return tuple(found.values())


def largest_cost(catalog: Catalog, model: CatalogModel, when: datetime) -> int:
    """The most a turn asking for `model` at `when` can cost, in micro-units.

    Whichever model answers (the one asked for or a fallback), at the highest price it has
    from `when` on, for the split of its window between prompt and answer that costs most.
    The answer is at most what the router asks the backend for: the asked model's
    max_output_tokens, and no more than the answering model's. The prompt and the answer
    together fit the answering model's window, or the asked model's, which the router fits
    the prompt to (and bills, counted in its tokens, when the model reports no usage).
    The cost is linear in the two counts, so the largest is at a corner: the whole window as
    prompt, or the longest answer after the longest prompt that leaves room for it.
    """
    largest = 0
    for answering in models_of_turn(catalog, model):
        price = answering.highest_price_from(when)
        window = max(answering.context_window, model.context_window)
        output = min(model.max_output_tokens, answering.max_output_tokens, window)
        largest = max(largest, price.cost_micros(window, 0), price.cost_micros(window - output, output))
    return largest


def next_month(when: datetime) -> datetime:
    """The start of the calendar month (UTC) after the one `when` is in."""
    when = when.astimezone(UTC)
    if when.month == 12:
        return datetime(when.year + 1, 1, 1, tzinfo=UTC)
    return datetime(when.year, when.month + 1, 1, tzinfo=UTC)


def scopes_of(principal: Principal) -> tuple[BudgetScope, ...]:
    """The budgets a turn of this caller counts against: the user's, the API key's, the tier's."""
    scopes = [BudgetScope.user(principal.user_id)]
    if principal.api_key_id:
        scopes.append(BudgetScope.api_key(principal.user_id, principal.api_key_id))
    scopes.append(BudgetScope.tier(principal.tier))
    return tuple(scopes)


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.refusals = Counter(
            "parley_budget_refusals",
            "Turns refused by a budget's hard limit, by the kind of budget (user, api_key, tier).",
            ["scope"],
            registry=registry,
        )
        self.warnings = Counter(
            "parley_budget_warnings",
            "Soft limits turns could pass (each a warning in TurnStarted), by the kind of budget.",
            ["scope"],
            registry=registry,
        )
        self.releases = Counter(
            "parley_budget_releases",
            "Reservations the router gave back: turns that ended without a usage event.",
            registry=registry,
        )


class TurnBudgets:
    """Reserves a turn's largest cost at admission and releases it when no usage follows."""

    def __init__(
        self,
        state: BudgetState,
        catalog: Catalog,
        *,
        hold_s: float,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._state = state
        self._catalog = catalog
        self._hold_s = hold_s
        self._clock = clock
        self._metrics = _Metrics(registry if registry is not None else CollectorRegistry())

    async def reserve(
        self, turn_id: str, principal: Principal, model: CatalogModel
    ) -> tuple[BudgetWarning, ...]:
        """Hold the turn's largest cost on its budgets; the soft limits it could pass.

        RESOURCE_EXHAUSTED (BUDGET_EXHAUSTED) when a hard limit would be passed, UNAVAILABLE
        (BUDGET_STATE_UNAVAILABLE) while the ledger rebuilds the state; either way nothing is
        held. Reserving the same turn again holds nothing more.
        """
        now = self._clock()
        amount = largest_cost(self._catalog, model, now)
        currency = self._catalog.currency
        try:
            reservation = await self._state.reserve(
                turn_id, amount, scopes_of(principal), month=month_of(now), hold_s=self._hold_s
            )
        except BudgetStateUnavailableError:
            _log.warning("budget state unavailable; turn refused", user_id=principal.user_id)
            raise RpcError(
                grpc.StatusCode.UNAVAILABLE,
                "BUDGET_STATE_UNAVAILABLE",
                "the budgets are being rebuilt; retry shortly",
                retry_after_s=1.0,
            ) from None
        refusal = reservation.refusal
        if refusal is not None:
            self._metrics.refusals.labels(refusal.scope.kind).inc()
            name = refusal.scope.name
            raise RpcError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "BUDGET_EXHAUSTED",
                f"this turn could cost up to {amount} micro-{currency}, which would take {name} past "
                f"its hard limit of {refusal.hard_limit} ({refusal.committed} are spent or reserved "
                "this month); retry next month",
                metadata={
                    "budget": name,
                    "hard_limit_micros": str(refusal.hard_limit),
                    "committed_micros": str(refusal.committed),
                    "currency": currency,
                },
                retry_after_s=max(1.0, (next_month(now) - now).total_seconds()),
            )
        for warning in reservation.warnings:
            self._metrics.warnings.labels(warning.scope.kind).inc()
        return tuple(
            BudgetWarning(w.scope.name, w.soft_limit, w.committed, currency) for w in reservation.warnings
        )

    async def release(self, turn_id: str) -> None:
        """Give back what the turn reserved (it ended without a usage event). A failure is
        logged, not raised: the reservation then expires after `hold_s`."""
        try:
            await self._state.release([turn_id])
        except Exception as error:
            _log.warning("releasing a reservation failed", turn_id=turn_id, error_type=type(error).__name__)
            return
        self._metrics.releases.inc()

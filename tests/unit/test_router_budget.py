"""svc_router.budget: a turn's largest possible cost, and what a reservation's answer becomes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from prometheus_client import CollectorRegistry

from parley_core.auth import Principal
from parley_core.budgets import (
    BudgetScope,
    BudgetState,
    BudgetStateUnavailableError,
    Refusal,
    Reservation,
    Warning,
)
from parley_core.catalog import Catalog, load_catalog
from parley_core.errors import RpcError
from svc_router.budget import TurnBudgets, largest_cost, models_of_turn, next_month
from svc_router.turns import BudgetWarning

NOW = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)


def _model(name: str, **fields: Any) -> dict[str, Any]:
    """A model of 2,048 tokens, 1,024 of them answer, at 1 and 2 units per million tokens."""
    model: dict[str, Any] = {
        "name": name,
        "display_name": name.title(),
        "context_window": 2048,
        "max_output_tokens": 1024,
        "backends": [{"kind": "triton", "model": name}],
        "price": {
            "currency": "USD",
            "input_per_million_tokens": 1_000_000,
            "output_per_million_tokens": 2_000_000,
        },
    }
    model.update(fields)
    return model


def _catalog(*models: dict[str, Any]) -> Catalog:
    return Catalog.model_validate({"schema_version": 2, "default_model": models[0]["name"], "models": models})


def _price(input_micros: int, output_micros: int, **fields: Any) -> dict[str, Any]:
    return {
        "currency": "USD",
        "input_per_million_tokens": input_micros,
        "output_per_million_tokens": output_micros,
        **fields,
    }


def _cost_of(catalog: Catalog, name: str, when: datetime = NOW) -> int:
    return largest_cost(catalog, catalog.model(name), when)


# Largest cost ------------------------------------------------------------------------------


def test_a_dearer_answer_costs_most_as_the_longest_answer_after_the_longest_prompt() -> None:
    catalog = _catalog(_model("alpha"))

    # 1,024 prompt tokens at 1 + 1,024 answer tokens at 2 (per million), in micro-units.
    assert _cost_of(catalog, "alpha") == 1024 * 1 + 1024 * 2


def test_a_dearer_prompt_costs_most_as_the_whole_window() -> None:
    catalog = _catalog(_model("alpha", price=_price(3_000_000, 1_000_000)))

    assert _cost_of(catalog, "alpha") == 2048 * 3


def test_the_cost_is_rounded_up_once_to_a_whole_micro_unit() -> None:
    # 1,024 * 1 + 1,024 * 2 = 3,072 millionths of a micro-unit.
    catalog = _catalog(_model("alpha", price=_price(1, 2)))

    assert _cost_of(catalog, "alpha") == 1


def test_a_free_model_costs_nothing() -> None:
    catalog = _catalog(_model("alpha", price=_price(0, 0)))

    assert _cost_of(catalog, "alpha") == 0


def test_the_answer_is_no_longer_than_the_asked_models_max_output_tokens() -> None:
    # Beta could answer 2,000 tokens, but the router asks for at most alpha's 100.
    catalog = _catalog(
        _model("alpha", max_output_tokens=100, fallbacks=["beta"], price=_price(0, 0)),
        _model("beta", max_output_tokens=2000),
    )

    assert _cost_of(catalog, "alpha") == (2048 - 100) * 1 + 100 * 2


def test_the_answer_is_no_longer_than_the_answering_models_max_output_tokens() -> None:
    catalog = _catalog(
        _model("alpha", max_output_tokens=1024, fallbacks=["beta"], price=_price(0, 0)),
        _model("beta", max_output_tokens=10),
    )

    assert _cost_of(catalog, "alpha") == (2048 - 10) * 1 + 10 * 2


def test_the_dearest_model_a_turn_may_fall_back_to_sets_the_cost_even_through_another() -> None:
    catalog = _catalog(
        _model("alpha", fallbacks=["beta", "gamma"]),
        _model("beta", fallbacks=["delta"], price=_price(2_000_000, 2_000_000)),
        _model("gamma", fallbacks=["delta"]),
        _model("delta", price=_price(5_000_000, 7_000_000)),
    )

    assert [m.name for m in models_of_turn(catalog, catalog.model("alpha"))] == [
        "alpha",
        "beta",
        "gamma",
        "delta",
    ]
    assert _cost_of(catalog, "alpha") == 1024 * 5 + 1024 * 7
    # A fallback's own turn does not look back at the models that fall back to it.
    assert _cost_of(catalog, "beta") == 1024 * 5 + 1024 * 7
    assert _cost_of(catalog, "gamma") == 1024 * 5 + 1024 * 7
    assert _cost_of(catalog, "delta") == 1024 * 5 + 1024 * 7


def test_a_fallback_with_a_larger_window_may_read_a_longer_prompt() -> None:
    catalog = _catalog(
        _model("alpha", fallbacks=["beta"], price=_price(0, 0)),
        _model("beta", context_window=8192, max_output_tokens=1024, price=_price(1_000_000, 1_000_000)),
    )

    assert _cost_of(catalog, "alpha") == 8192


def test_a_fallback_with_a_smaller_window_is_priced_on_the_asked_models_window() -> None:
    # The router fits the prompt to alpha's window and bills its own count of it when the
    # fallback reports no usage: up to 2,048 tokens, though beta's window holds 512.
    catalog = _catalog(
        _model("alpha", fallbacks=["beta"], price=_price(0, 0)),
        _model("beta", context_window=512, max_output_tokens=256, price=_price(1_000_000, 1_000_000)),
    )

    assert _cost_of(catalog, "alpha") == 2048


def test_a_later_price_change_counts_and_an_earlier_one_does_not() -> None:
    changes = [
        {**_price(9_000_000, 9_000_000, version="old"), "effective_time": datetime(2026, 1, 1, tzinfo=UTC)},
        {**_price(1_000_000, 1_000_000, version="now"), "effective_time": datetime(2026, 6, 1, tzinfo=UTC)},
        {**_price(1_000_000, 4_000_000, version="next"), "effective_time": datetime(2027, 1, 1, tzinfo=UTC)},
    ]
    catalog = _catalog(_model("alpha", price=_price(9_000_000, 9_000_000), price_changes=changes))

    # From now on: input at most 1, output at most 4 (the change to come).
    assert _cost_of(catalog, "alpha") == 1024 * 1 + 1024 * 4
    # Once the later change is in effect, only it counts.
    assert _cost_of(catalog, "alpha", datetime(2027, 2, 1, tzinfo=UTC)) == 1024 * 1 + 1024 * 4
    # Before the first change, every price to come counts.
    assert _cost_of(catalog, "alpha", datetime(2025, 1, 1, tzinfo=UTC)) == 1024 * 9 + 1024 * 9


def test_the_real_catalogs_models_reserve_their_longest_answers() -> None:
    catalog = load_catalog(Path(__file__).resolve().parents[2] / "model_repo" / "catalog.toml")

    # 1,024 prompt tokens at 1 USD and 1,024 answer tokens at 2 USD per million.
    assert _cost_of(catalog, "parley-scripted") == 3072
    # 1,536 prompt tokens at 0.05 USD and 512 answer tokens at 0.10 USD per million.
    assert _cost_of(catalog, "smollm2") == 128


@pytest.mark.parametrize(
    ("when", "start"),
    [
        (datetime(2026, 11, 27, 18, 0, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
        (datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        (datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC)),
    ],
)
def test_the_next_month_starts_on_its_first_day_in_utc(when: datetime, start: datetime) -> None:
    assert next_month(when) == start


# Reserving -----------------------------------------------------------------------------------


class _State:
    """BudgetState's reserve and release, answering what the test says and noting the calls."""

    def __init__(self, answer: Reservation | Exception) -> None:
        self.answer = answer
        self.reserved: list[tuple[str, int, tuple[BudgetScope, ...], str, float]] = []
        self.released: list[str] = []

    async def reserve(
        self, turn_id: str, amount: int, scopes: Sequence[BudgetScope], *, month: str, hold_s: float
    ) -> Reservation:
        self.reserved.append((turn_id, amount, tuple(scopes), month, hold_s))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def release(self, turn_ids: Sequence[str]) -> None:
        self.released.extend(turn_ids)


USER = Principal(user_id="u1", role="user", tier="pro", scopes=frozenset({"chat"}))
KEYED = Principal(user_id="u1", role="user", tier="pro", scopes=frozenset({"chat"}), api_key_id="k1")


def _budgets(state: _State, registry: CollectorRegistry | None = None) -> TurnBudgets:
    return TurnBudgets(
        cast(BudgetState, state), _catalog(_model("alpha")), hold_s=900, registry=registry, clock=lambda: NOW
    )


async def test_a_turn_reserves_its_largest_cost_on_its_users_and_tiers_budgets_this_month() -> None:
    state = _State(Reservation())

    assert await _budgets(state).reserve("t1", USER, _catalog(_model("alpha")).model("alpha")) == ()
    assert state.reserved == [("t1", 3072, (BudgetScope.user("u1"), BudgetScope.tier("pro")), "2026-11", 900)]


async def test_a_turn_with_an_api_key_reserves_on_the_keys_budget_too() -> None:
    state = _State(Reservation())

    await _budgets(state).reserve("t1", KEYED, _catalog(_model("alpha")).model("alpha"))

    [(_turn, _amount, scopes, _month, _hold)] = state.reserved
    assert scopes == (BudgetScope.user("u1"), BudgetScope.api_key("u1", "k1"), BudgetScope.tier("pro"))


async def test_a_hard_limit_refuses_with_the_budget_its_limit_and_a_retry_next_month() -> None:
    registry = CollectorRegistry()
    state = _State(Reservation(refusal=Refusal(BudgetScope.api_key("u1", "k1"), 5000, 4000)))

    with pytest.raises(RpcError) as refused:
        await _budgets(state, registry).reserve("t1", KEYED, _catalog(_model("alpha")).model("alpha"))

    error = refused.value
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "BUDGET_EXHAUSTED")
    assert error.metadata == {
        "budget": "users/u1/apiKeys/k1/budget",
        "hard_limit_micros": "5000",
        "committed_micros": "4000",
        "currency": "USD",
    }
    # From 2026-11-27 18:00 to 2026-12-01 00:00.
    assert error.retry_after_s == (3 * 24 + 6) * 3600
    assert registry.get_sample_value("parley_budget_refusals_total", {"scope": "api_key"}) == 1


async def test_a_missing_budget_state_is_unavailable_for_a_second() -> None:
    state = _State(BudgetStateUnavailableError("rebuilding"))

    with pytest.raises(RpcError) as refused:
        await _budgets(state).reserve("t1", USER, _catalog(_model("alpha")).model("alpha"))

    error = refused.value
    assert (error.code, error.reason, error.retry_after_s) == (
        grpc.StatusCode.UNAVAILABLE,
        "BUDGET_STATE_UNAVAILABLE",
        1.0,
    )


async def test_soft_limits_become_warnings_in_the_catalogs_currency() -> None:
    registry = CollectorRegistry()
    state = _State(
        Reservation(
            warnings=(
                Warning(BudgetScope.user("u1"), 1000, 3072),
                Warning(BudgetScope.tier("pro"), 2000, 9000),
            )
        )
    )

    warnings = await _budgets(state, registry).reserve("t1", USER, _catalog(_model("alpha")).model("alpha"))

    assert warnings == (
        BudgetWarning("users/u1/budget", 1000, 3072, "USD"),
        BudgetWarning("tiers/pro/budget", 2000, 9000, "USD"),
    )
    assert registry.get_sample_value("parley_budget_warnings_total", {"scope": "user"}) == 1
    assert registry.get_sample_value("parley_budget_warnings_total", {"scope": "tier"}) == 1


async def test_a_release_gives_the_turns_reservation_back_and_is_counted() -> None:
    registry = CollectorRegistry()
    state = _State(Reservation())

    await _budgets(state, registry).release("t1")

    assert state.released == ["t1"]
    assert registry.get_sample_value("parley_budget_releases_total") == 1

"""svc_ledger.billing: what a usage event is billed as, and which events are poison."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from parley.events.v1 import events_pb2
from parley_core.catalog import load_catalog
from parley_core.wire import timestamp
from svc_ledger.billing import PoisonEventError, price_event
from svc_ledger.pricing import PriceBook

PRICES = PriceBook(load_catalog(Path(__file__).resolve().parents[2] / "model_repo" / "catalog.toml"))
NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def _event(**changes: object) -> events_pb2.TurnCompleted:
    event = events_pb2.TurnCompleted(
        event_id="e1",
        event_time=timestamp(datetime(2026, 11, 27, 11, 30, 0, 123456, tzinfo=UTC)),
        user="users/u1",
        tier="free",
        turn="users/u1/conversations/c1/turns/t1",
        model="models/parley-scripted",
        finish_reason="stop",
        api_key="users/u1/apiKeys/k1",
    )
    event.usage.input_tokens, event.usage.output_tokens = 10, 5
    for field, value in changes.items():
        if value is None:
            event.ClearField(field)
        else:
            setattr(event, field, value)
    return event


def test_an_event_becomes_a_line_item_in_its_month_at_its_price() -> None:
    priced = price_event(_event().SerializeToString(), PRICES, NOW)

    item = priced.item
    assert (item.user_id, item.month, item.event_id, item.api_key) == ("u1", "2026-11", "e1", "k1")
    assert item.usage_time == datetime(2026, 11, 27, 11, 30, 0, 123000, tzinfo=UTC)  # milliseconds
    assert (item.cost_micros, item.currency, item.price_version, item.estimated) == (20, "USD", "1", False)
    assert priced.totals_key == "2026-11-27T11|parley-scripted|free|k1|stop"
    assert priced.amounts == (1, 10, 5, 20, 0)


def test_without_model_usage_the_estimate_is_billed_and_flagged() -> None:
    event = _event(usage=None)
    event.estimated_usage.input_tokens, event.estimated_usage.output_tokens = 7, 0

    priced = price_event(event.SerializeToString(), PRICES, NOW)

    assert (priced.item.input_tokens, priced.item.cost_micros, priced.item.estimated) == (7, 7, True)
    assert priced.amounts[4] == 1


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"event_id": ""}, "malformed"),
        ({"event_id": "a/b"}, "malformed"),
        ({"turn": "users/u2/conversations/c1/turns/t1"}, "malformed"),  # another user's turn
        ({"user": "u1"}, "malformed"),
        ({"api_key": "users/u2/apiKeys/k1"}, "malformed"),  # another user's key
        ({"event_time": None}, "malformed"),
        ({"tier": "Free!"}, "malformed"),
        ({"finish_reason": "whatever"}, "malformed"),
        ({"model": "models/nope"}, "unknown_model"),
        ({"model": "parley-scripted"}, "unknown_model"),
        ({"usage": None}, "no_usage"),
    ],
)
def test_events_that_can_never_be_billed_are_poison(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(PoisonEventError) as raised:
        price_event(_event(**changes).SerializeToString(), PRICES, NOW)
    assert raised.value.reason == reason


def test_negative_counts_and_garbage_are_poison() -> None:
    event = _event()
    event.usage.output_tokens = -1
    with pytest.raises(PoisonEventError) as negative:
        price_event(event.SerializeToString(), PRICES, NOW)
    with pytest.raises(PoisonEventError) as garbage:
        price_event(b"\xff\xfe not a protobuf", PRICES, NOW)

    assert (negative.value.reason, garbage.value.reason) == ("negative_counts", "undecodable")

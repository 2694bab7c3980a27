"""From a `usage` event to a priced line item, or to the reason it can never be one.

An event is billed from the usage the model reported; without it, from the router's
estimate (`estimated_usage`, made from the text), and the line item is flagged. An event
that can never be priced is poison and goes to the dead-letter topic: one that cannot be
decoded, lacks its ids or time, names a model the catalog does not have, carries negative
counts, or carries no usage at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from parley.events.v1 import events_pb2
from parley_core.budgets import month_of
from svc_ledger.pricing import PriceBook
from svc_ledger.store import Amounts, LineItemRow

_ID = r"[A-Za-z0-9_-]{1,64}"
_USER = re.compile(rf"^users/(?P<user>{_ID})$")
_TURN = re.compile(rf"^users/(?P<user>{_ID})/conversations/{_ID}/turns/{_ID}$")
_API_KEY = re.compile(rf"^users/(?P<user>{_ID})/apiKeys/(?P<key>{_ID})$")
_MODEL = re.compile(r"^models/(?P<model>[a-z0-9][a-z0-9.-]{0,62})$")
_TIER = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_EVENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FINISH = frozenset({"stop", "max_tokens", "cancelled", "error"})


class PoisonEventError(ValueError):
    """An event that can never be priced; `reason` labels the dead-letter metric."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Priced:
    """An event as a line item, with where it counts in the month's totals."""

    item: LineItemRow

    @property
    def totals_key(self) -> str:
        """The month's totals entry: hour, model, tier, API key and finish reason."""
        item = self.item
        return "|".join(
            (item.usage_time.strftime("%Y-%m-%dT%H"), item.model, item.tier, item.api_key, item.finish_reason)
        )

    @property
    def amounts(self) -> Amounts:
        item = self.item
        return (1, item.input_tokens, item.output_tokens, item.cost_micros, int(item.estimated))


def price_event(data: bytes, prices: PriceBook, now: datetime) -> Priced:
    """The line item of a TurnCompleted payload; PoisonEventError when it can never be one."""
    try:
        event = events_pb2.TurnCompleted.FromString(data)
    except DecodeError as error:
        raise PoisonEventError("undecodable", str(error) or "not a TurnCompleted") from None
    if not _EVENT_ID.match(event.event_id):
        raise PoisonEventError("malformed", "event_id is missing or not an id")
    user = _USER.match(event.user)
    turn = _TURN.match(event.turn)
    if user is None or turn is None or turn["user"] != user["user"]:
        raise PoisonEventError("malformed", "user and turn must name the same user")
    api_key = _API_KEY.match(event.api_key) if event.api_key else None
    if event.api_key and (api_key is None or api_key["user"] != user["user"]):
        raise PoisonEventError("malformed", "api_key is not a key of the event's user")
    if not event.HasField("event_time") or event.event_time.seconds <= 0:
        raise PoisonEventError("malformed", "event_time is missing")
    if not _TIER.match(event.tier) or event.finish_reason not in _FINISH:
        raise PoisonEventError("malformed", "tier or finish_reason is not one Parley uses")
    model = _MODEL.match(event.model)
    stamp = event.event_time.ToDatetime(tzinfo=UTC)
    usage_time = stamp.replace(microsecond=stamp.microsecond // 1000 * 1000)  # Cassandra keeps ms
    price = prices.price(model["model"], usage_time) if model else None
    if model is None or price is None:
        raise PoisonEventError("unknown_model", f"{event.model!r} is not in the catalog")
    if event.HasField("usage"):
        usage, estimated = event.usage, False
    elif event.HasField("estimated_usage"):
        usage, estimated = event.estimated_usage, True
    else:
        raise PoisonEventError("no_usage", "neither usage nor estimated_usage is set")
    if usage.input_tokens < 0 or usage.output_tokens < 0:
        raise PoisonEventError("negative_counts", f"{usage.input_tokens} in, {usage.output_tokens} out")
    return Priced(
        LineItemRow(
            user_id=user["user"],
            month=month_of(usage_time),
            usage_time=usage_time,
            event_id=event.event_id,
            turn=event.turn,
            model=model["model"],
            tier=event.tier,
            api_key=api_key["key"] if api_key else "",
            finish_reason=event.finish_reason,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_micros=price.cost_micros(usage.input_tokens, usage.output_tokens),
            currency=price.currency,
            price_version=price.version,
            estimated=estimated,
            priced_time=now,
        )
    )

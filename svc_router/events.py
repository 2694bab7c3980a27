"""The router's one event: TurnCompleted on the `usage` topic, through the outbox.

Its `usage` holds the model's own counts when the model reported them; otherwise (a
cancelled or failed turn, a server that streams no usage) `estimated_usage` holds the
router's: the prompt counted with the model's tokenizer and the tokens streamed. The ledger
settles the turn's budget reservation when it prices the event.

The event id is derived from the turn, so whoever writes it (the router that ran the turn,
or one that closed it after that router died) writes the same event, and the ledger's line
item, keyed by it, is written once.
"""

from __future__ import annotations

from datetime import UTC, datetime

from opentelemetry import propagate

from parley.common.v1 import common_pb2
from parley.events.v1 import events_pb2
from parley_core.events import USAGE
from parley_core.outbox import Outbox, OutboxEvent, outbox_migration
from parley_core.wire import timestamp
from svc_router.turns import Completed, TurnRecord, derived_id

#: The router's keyspace holds only its outbox.
MIGRATIONS = [outbox_migration(1)]


def usage_event_id(turn: str) -> str:
    return derived_id("usage", turn)


class UsageEvents:
    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def turn_completed(
        self, record: TurnRecord, model: str, completed: Completed, *, reported: bool
    ) -> str:
        """Add the turn's TurnCompleted to the outbox; its event id. `reported`: the counts
        are the model's own (`usage`); otherwise they are the router's (`estimated_usage`)."""
        turn = str(record.name)
        event = usage_event_id(turn)
        counts = common_pb2.TokenUsage(
            input_tokens=completed.input_tokens, output_tokens=completed.output_tokens
        )
        payload = events_pb2.TurnCompleted(
            event_id=event,
            event_time=timestamp(datetime.now(UTC)),
            user=f"users/{record.name.user_id}",
            tier=record.tier,
            turn=turn,
            model=model,
            finish_reason=completed.finish_reason,
            api_key=f"users/{record.name.user_id}/apiKeys/{record.api_key_id}" if record.api_key_id else "",
        )
        (payload.usage if reported else payload.estimated_usage).CopyFrom(counts)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        await self._outbox.add(
            OutboxEvent(USAGE, record.name.user_id, event, payload.SerializeToString(), carrier)
        )
        return event

"""svc_history's events as `parley.events.v1` payloads, added to the outbox.

Each event is keyed by the user id (one user's events stay in order) and carries the
current trace context (`traceparent`) as a message property, so a consumer's work joins
the trace of the call that caused it. Event ids are derived from what the event describes
(`svc_history.model.event_id`): a retried write adds the same event again, and consumers
drop the duplicate by its id.
"""

from __future__ import annotations

from datetime import datetime

from opentelemetry import propagate

from parley.events.v1 import events_pb2
from parley_core.events import CONVERSATION_DELETED, MESSAGE_CREATED, USER_DELETED
from parley_core.outbox import Outbox, OutboxEvent
from parley_core.wire import timestamp
from svc_history.model import Conversation, Message, event_id, user_name


def _trace() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


class OutboxEvents:
    """The domain's EventLog, written to the outbox table of history's keyspace."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def _add(self, topic: str, user_id: str, event: str, payload: bytes) -> None:
        await self._outbox.add(OutboxEvent(topic, user_id, event, payload, _trace()))

    async def message_created(self, message: Message) -> None:
        event = event_id(MESSAGE_CREATED, message.name)
        payload = events_pb2.MessageCreated(
            event_id=event,
            event_time=timestamp(message.create_time),
            user=user_name(message.user_id),
            message=message.name,
            author=message.author,
            text=message.text,
        )
        await self._add(MESSAGE_CREATED, message.user_id, event, payload.SerializeToString())

    async def conversation_deleted(self, conversation: Conversation, when: datetime) -> None:
        event = event_id(CONVERSATION_DELETED, conversation.name)
        payload = events_pb2.ConversationDeleted(
            event_id=event,
            event_time=timestamp(when),
            user=user_name(conversation.user_id),
            conversation=conversation.name,
        )
        await self._add(CONVERSATION_DELETED, conversation.user_id, event, payload.SerializeToString())

    async def user_deleted(self, user_id: str, event: str, when: datetime) -> None:
        payload = events_pb2.UserDeleted(event_id=event, event_time=timestamp(when), user=user_name(user_id))
        await self._add(USER_DELETED, user_id, event, payload.SerializeToString())

"""Where Parley's events go: one Pulsar tenant and namespace, one topic per kind of event.

Payloads are `parley.events.v1` Protobuf messages, the message key is the user id (one
user's events stay in order) and every message carries its `event_id` as a property, so
consumers can drop duplicates. Producers publish through `parley_core.outbox`.
The local stack creates the tenant, namespace and these topics (parley_stack/servers/pulsar.py);
in production the platform's Pulsar set-up does (k8s/).
"""

from __future__ import annotations

__all__ = [
    "CONVERSATION_DELETED",
    "MESSAGE_CREATED",
    "NAMESPACE",
    "TENANT",
    "TOPICS",
    "TOPIC_PREFIX",
    "USAGE",
    "USER_DELETED",
    "topic_url",
]

TENANT = "parley"
NAMESPACE = f"{TENANT}/events"
TOPIC_PREFIX = f"persistent://{NAMESPACE}/"

#: A message was stored (`parley.events.v1.MessageCreated`); the search indexer consumes it.
MESSAGE_CREATED = "message-created"
#: A conversation was deleted (`ConversationDeleted`).
CONVERSATION_DELETED = "conversation-deleted"
#: A user asked for all their data to be erased (`UserDeleted`); every store consumes it.
USER_DELETED = "user-deleted"
#: A chat turn used tokens (`TurnCompleted`); the ledger consumes it.
USAGE = "usage"

TOPICS = (MESSAGE_CREATED, CONVERSATION_DELETED, USER_DELETED, USAGE)


def topic_url(topic: str, prefix: str = TOPIC_PREFIX) -> str:
    """The full Pulsar topic name of a short one: "usage" -> "persistent://parley/events/usage"."""
    return f"{prefix}{topic}"

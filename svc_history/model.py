"""svc_history's records: plain Python, independent of the wire and of storage."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

#: Who wrote a message, as stored and as events name it.
AUTHORS = ("user", "assistant", "system")
#: Whether a message is whole, as stored.
STATES = ("complete", "cancelled", "failed")

#: The UUID version 1 clock starts at 1582-10-15; this many 100 ns ticks before the epoch.
_V1_EPOCH_TICKS = 0x01B21DD213814000


def now() -> datetime:
    """Now, at the millisecond precision Cassandra stores, so a read equals what was written."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def digest(secret: str) -> str:
    """How a random secret (a share token) is stored: its SHA-256. The secrets carry 256
    bits of entropy, so a slow hash adds nothing."""
    return hashlib.sha256(secret.encode()).hexdigest()


def time_ordered_id(value: str) -> uuid.UUID | None:
    """value as a time-ordered UUID (version 1 or 7, RFC 4122 variant), or None."""
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return None
    if parsed.variant != uuid.RFC_4122 or parsed.version not in (1, 7):
        return None
    return parsed


def order_key(message_id: str) -> tuple[int, bytes]:
    """The position of a message in time: nanoseconds since the epoch its id carries, then
    the id's bytes (which order version 7 ids written within one millisecond)."""
    return order_key_of(uuid.UUID(message_id))


def order_key_of(parsed: uuid.UUID) -> tuple[int, bytes]:
    """order_key of an id already parsed (a driver's UUID)."""
    if parsed.version == 1:
        return (parsed.time - _V1_EPOCH_TICKS) * 100, parsed.bytes
    if parsed.version == 7:
        return (parsed.int >> 80) * 1_000_000, parsed.bytes
    return 0, parsed.bytes


def id_time(message_id: str) -> datetime:
    """When a time-ordered id was made, by its own clock."""
    nanos, _ = order_key(message_id)
    return datetime.fromtimestamp(nanos / 1e9, UTC)


@dataclass(frozen=True)
class Conversation:
    user_id: str
    conversation_id: str
    title: str
    model: str
    system_prompt: str
    folder: str
    tags: tuple[str, ...]
    pinned: bool
    archived: bool
    #: The id of the last message of the active path; "" while there is none.
    active_message: str
    create_time: datetime
    update_time: datetime
    #: A new random value with every change; the etag is made from it.
    version: str
    #: The request_id of the CreateConversation call that made it ("" without one).
    request_id: str = ""

    @property
    def name(self) -> str:
        return conversation_name(self.user_id, self.conversation_id)

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    @property
    def pinned_rank(self) -> int:
        """Where the conversation sorts: pinned ones (1) before the others (0)."""
        return 1 if self.pinned else 0


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Message:
    user_id: str
    conversation_id: str
    message_id: str
    #: The id of the message this one follows; "" for a first message (a root).
    parent_id: str
    author: str
    text: str
    model: str
    state: str
    usage: Usage | None
    turn: str
    create_time: datetime
    #: The partition of the messages table that holds the row.
    bucket: int = 0

    @property
    def name(self) -> str:
        return message_name(self.user_id, self.conversation_id, self.message_id)


@dataclass(frozen=True)
class Placed:
    """A message with its place among its siblings (the contract's sibling fields)."""

    message: Message
    sibling_index: int
    sibling_count: int


@dataclass(frozen=True)
class ShareLink:
    user_id: str
    conversation_id: str
    share_link_id: str
    #: The snapshot is the path from the first message to this one.
    last_message: str
    expire_time: datetime | None
    password_hash: str
    create_time: datetime
    #: The conversation's title when the link was made.
    title: str
    view_count: int = 0
    #: The public token; only set in the answer to the call that created the link.
    token: str = ""
    request_id: str = ""

    @property
    def name(self) -> str:
        return f"{conversation_name(self.user_id, self.conversation_id)}/shareLinks/{self.share_link_id}"

    def expired(self, moment: datetime) -> bool:
        return self.expire_time is not None and self.expire_time <= moment


@dataclass(frozen=True)
class SharedSnapshot:
    title: str
    messages: list[Message]
    share_time: datetime


@dataclass(frozen=True)
class Page:
    """One page of a listing and the opaque token of the next."""

    items: list[object] = field(default_factory=list)
    next_token: str = ""


@dataclass(frozen=True)
class ErasureReceipt:
    deleted_conversations: int
    deleted_messages: int
    deleted_share_links: int
    delete_time: datetime
    event_id: str


#: Event ids are derived from what they describe, so a retried write that adds its event
#: again adds the same event (consumers drop the duplicate by its id).
_EVENTS = uuid.UUID("6f1c4a52-8a53-4b0e-9d3e-5b1f2c7d9e40")


def event_id(kind: str, subject: str) -> str:
    return str(uuid.uuid5(_EVENTS, f"{kind}:{subject}"))


def user_name(user_id: str) -> str:
    return f"users/{user_id}"


def conversation_name(user_id: str, conversation_id: str) -> str:
    return f"users/{user_id}/conversations/{conversation_id}"


def message_name(user_id: str, conversation_id: str, message_id: str) -> str:
    return f"{conversation_name(user_id, conversation_id)}/messages/{message_id}"


class EventLog(Protocol):
    """Where the domain records what happened; each call returns once the event is in the
    outbox (published to Pulsar later, never lost). Adding the same event twice is harmless."""

    async def message_created(self, message: Message) -> None: ...

    async def conversation_deleted(self, conversation: Conversation, when: datetime) -> None: ...

    async def user_deleted(self, user_id: str, event_id: str, when: datetime) -> None: ...

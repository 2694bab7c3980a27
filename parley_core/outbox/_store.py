"""The outbox table: events written beside the writes they describe (see parley_core.outbox)."""

from __future__ import annotations

import asyncio
import re
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cassandra.cluster import Session
from cassandra.query import BoundStatement, PreparedStatement
from cassandra.util import min_uuid_from_time

from parley_core.cassandra import execute
from parley_core.migrations import Migration

#: Never lower it for an existing table: rows in the dropped shards would not be published.
DEFAULT_SHARDS = 16

#: The outbox itself. `id` is a time-based UUID taken when the event was added.
#: gc_grace_seconds is the default hint window (3 h): a row a replica resurrects after it is
#: only published twice, which consumers tolerate.
OUTBOX_TABLE_CQL = """CREATE TABLE IF NOT EXISTS {ks}.event_outbox (
    shard int,
    id timeuuid,
    event_id text,
    topic text,
    key text,
    payload blob,
    properties map<text, text>,
    PRIMARY KEY ((shard), id)
) WITH CLUSTERING ORDER BY (id ASC) AND gc_grace_seconds = 10800"""

#: Which relay works on which shard, until when (rows written with a TTL).
OUTBOX_LEASES_CQL = """CREATE TABLE IF NOT EXISTS {ks}.event_outbox_leases (
    shard int PRIMARY KEY,
    owner text,
    expires_at timestamp
)"""

OUTBOX_STATEMENTS = (OUTBOX_TABLE_CQL, OUTBOX_LEASES_CQL)


def outbox_migration(version: int) -> Migration:
    """The outbox's tables as one migration of a service's own list."""
    return Migration(version, "events outbox", OUTBOX_STATEMENTS)


_TOPIC_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")


@dataclass(frozen=True)
class OutboxEvent:
    """One event to publish.

    topic: the short topic name (`parley_core.events.TOPICS`), e.g. "message-created".
    key: the Pulsar message key, the user id: one user's events stay in order.
    event_id: a UUID, also sent as the `event_id` message property (consumers dedupe by it).
    payload: a serialized `parley.events.v1` message.
    properties: more message properties, e.g. `traceparent`.
    """

    topic: str
    key: str
    event_id: str
    payload: bytes
    properties: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _TOPIC_NAME.fullmatch(self.topic):
            raise ValueError(f"not a short topic name: {self.topic!r}")
        if not self.key:
            raise ValueError("an event needs a key (the user id)")
        uuid.UUID(self.event_id)  # ValueError when it is not a UUID


class Outbox:
    """The outbox table of one keyspace: where a service adds its events.

    Statements run at the session's default consistency (LOCAL_QUORUM with
    `parley_core.cassandra.connect`).
    """

    def __init__(self, session: Session, keyspace: str, *, shards: int = DEFAULT_SHARDS) -> None:
        if shards < 1:
            raise ValueError("an outbox needs at least one shard")
        self.session = session
        self.keyspace = keyspace
        self.shards = shards
        self._prepared: dict[str, PreparedStatement] = {}
        self._listeners: set[Callable[[int], None]] = set()

    def shard_of(self, key: str) -> int:
        """The shard of a key: the same in every process (crc32, not Python's salted hash)."""
        return zlib.crc32(key.encode()) % self.shards

    async def add(self, event: OutboxEvent) -> None:
        """Write the event (after the write it describes) and wake this process's relays."""
        await execute(self.session, await self.statement(event))
        self.notify(event)

    async def statement(self, event: OutboxEvent) -> BoundStatement:
        """The INSERT of an event, for a logged batch with the write it describes.

        After such a batch succeeded, call `notify(event)` so the relay publishes at once.
        """
        insert = await self._statement(
            "INSERT INTO {ks}.event_outbox (shard, id, event_id, topic, key, payload, properties) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        # uuid1 is monotonic within a process: events added one after another keep their order.
        return insert.bind(
            (
                self.shard_of(event.key),
                uuid.uuid1(),
                event.event_id,
                event.topic,
                event.key,
                event.payload,
                dict(event.properties),
            )
        )

    def notify(self, *events: OutboxEvent) -> None:
        """Wake the relays of this process for these events' shards."""
        for event in events:
            shard = self.shard_of(event.key)
            for listener in list(self._listeners):
                listener(shard)

    # What a relay uses ---------------------------------------------------------------------

    async def _statement(self, template: str) -> PreparedStatement:
        cql = template.replace("{ks}", self.keyspace)
        prepared = self._prepared.get(cql)
        if prepared is None:
            prepared = await asyncio.to_thread(self.session.prepare, cql)
            self._prepared[cql] = prepared
        return prepared

    async def _read(self, shard: int, after: float | None, limit: int) -> list[_Row]:
        if after is None:
            query = await self._statement(_SELECT_PENDING + " LIMIT ?")
            params: tuple[Any, ...] = (shard, limit)
        else:
            query = await self._statement(_SELECT_PENDING + " AND id >= ? LIMIT ?")
            params = (shard, min_uuid_from_time(after), limit)
        rows = await execute(self.session, query, params)
        return [
            _Row(
                shard=shard,
                id=row.id,
                event=OutboxEvent(
                    topic=row.topic,
                    key=row.key,
                    event_id=row.event_id,
                    payload=row.payload or b"",
                    properties=dict(row.properties or {}),
                ),
            )
            for row in rows
        ]

    async def _delete(self, shard: int, ids: list[uuid.UUID]) -> None:
        delete = await self._statement("DELETE FROM {ks}.event_outbox WHERE shard = ? AND id IN ?")
        await execute(self.session, delete, (shard, ids))

    async def _take_lease(self, shard: int, owner: str, lease_s: int) -> tuple[bool, datetime | None]:
        """(taken, the current holder's expiry when not)."""
        take = await self._statement(
            "INSERT INTO {ks}.event_outbox_leases (shard, owner, expires_at) VALUES (?, ?, ?) "
            "IF NOT EXISTS USING TTL ?"
        )
        rows = await execute(self.session, take, (shard, owner, _expiry(lease_s), lease_s))
        if not rows:
            return False, None
        row = rows[0]
        # A contended LWT may time out and still apply: then the row is already ours.
        if row[0] or getattr(row, "owner", None) == owner:
            return True, None
        return False, getattr(row, "expires_at", None)

    async def _renew_lease(self, shard: int, owner: str, lease_s: int) -> bool:
        # Both cells again: each keeps the TTL it was written with.
        renew = await self._statement(
            "UPDATE {ks}.event_outbox_leases USING TTL ? SET owner = ?, expires_at = ? "
            "WHERE shard = ? IF owner = ?"
        )
        rows = await execute(self.session, renew, (lease_s, owner, _expiry(lease_s), shard, owner))
        return bool(rows and rows[0][0])

    async def _release_lease(self, shard: int, owner: str) -> None:
        release = await self._statement("DELETE FROM {ks}.event_outbox_leases WHERE shard = ? IF owner = ?")
        await execute(self.session, release, (shard, owner))


_SELECT_PENDING = (
    "SELECT id, event_id, topic, key, payload, properties FROM {ks}.event_outbox WHERE shard = ?"
)


@dataclass(frozen=True)
class _Row:
    shard: int
    id: uuid.UUID
    event: OutboxEvent


def _expiry(lease_s: int) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=lease_s)

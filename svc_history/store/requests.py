"""request_id -> what the first request made, so a retried create or append makes nothing new.

A claim is a lightweight transaction (`IF NOT EXISTS`) on (scope, request_id); it holds the
whole record the request writes, so whoever finds the claim (a concurrent duplicate, a retry
after a crash half-way) can finish exactly the same writes. Scopes keep LWT partitions small
and uncontended: a user's creates, a conversation's share links, and a conversation's
appends spread over `APPEND_SHARDS` partitions (a hundred concurrent appends to one
conversation would otherwise queue on one Paxos partition).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from svc_history.store._table import Table, req

APPEND_SHARDS = 16


def conversation_scope(user_id: str) -> str:
    return f"conversations:{user_id}"


def share_scope(conversation_id: str) -> str:
    return f"shares:{conversation_id}"


def append_scope(conversation_id: str, request_id: str) -> str:
    shard = hashlib.sha256(request_id.encode()).digest()[0] % APPEND_SHARDS
    return f"messages:{conversation_id}:{shard}"


def append_scopes(conversation_id: str) -> list[str]:
    return [f"messages:{conversation_id}:{shard}" for shard in range(APPEND_SHARDS)]


@dataclass(frozen=True)
class Claim:
    resource_id: str
    payload: bytes
    create_time: datetime
    #: True when this call made the claim; False when an earlier request had.
    won: bool


class RequestStore(Table):
    async def get(self, scope: str, request_id: str) -> Claim | None:
        rows = await self._run(
            "SELECT resource_id, payload, create_time FROM {ks}.requests WHERE scope = ? AND request_id = ?",
            (scope, request_id),
        )
        if not rows or rows[0].resource_id is None:
            return None
        row = rows[0]
        return Claim(str(row.resource_id), bytes(row.payload or b""), req(row.create_time), won=False)

    async def claim(self, scope: str, request_id: str, user_id: str, claim: Claim, ttl_s: int) -> Claim:
        """Record claim for request_id unless a request got there first; returns the one that holds."""
        rows = await self._run(
            "INSERT INTO {ks}.requests (scope, request_id, user_id, resource_id, payload, create_time) "
            "VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?",
            (
                scope,
                request_id,
                user_id,
                uuid.UUID(claim.resource_id),
                claim.payload,
                claim.create_time,
                ttl_s,
            ),
        )
        if rows and rows[0][0]:
            return Claim(claim.resource_id, claim.payload, claim.create_time, won=True)
        row = rows[0]
        return Claim(str(row.resource_id), bytes(row.payload or b""), req(row.create_time), won=False)

    async def forget(self, scope: str, request_id: str) -> None:
        await self._run("DELETE FROM {ks}.requests WHERE scope = ? AND request_id = ?", (scope, request_id))

    async def drop(self, scopes: list[str]) -> None:
        for scope in scopes:
            await self._run("DELETE FROM {ks}.requests WHERE scope = ?", (scope,))

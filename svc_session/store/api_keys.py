"""API keys: per-user rows, the lookup by the key's digest, and idempotent creation."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from parley_core.cassandra import execute
from svc_session.model import ApiKey
from svc_session.store._table import Table, req, utc


class ApiKeyStore(Table):
    SCHEMA = (
        """CREATE TABLE IF NOT EXISTS api_keys (
            user_id uuid, key_id uuid, display_name text, scopes set<text>, key_prefix text,
            create_time timestamp, expire_time timestamp, revoke_time timestamp, key_hash text,
            PRIMARY KEY ((user_id), key_id))""",
        "CREATE TABLE IF NOT EXISTS api_keys_by_hash (key_hash text PRIMARY KEY, user_id uuid, key_id uuid)",
        """CREATE TABLE IF NOT EXISTS api_key_requests (
            user_id uuid, request_id text, key_id uuid, PRIMARY KEY ((user_id), request_id))""",
    )
    COLUMNS = (("api_keys", "key_hash", "text"),)

    async def insert(self, key: ApiKey, key_hash: str) -> None:
        await execute(
            self._cql,
            await self._q(
                "INSERT INTO {ks}.api_keys (user_id, key_id, display_name, scopes, key_prefix, create_time, "
                "expire_time, key_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            (
                uuid.UUID(key.user_id), uuid.UUID(key.key_id), key.display_name, set(key.scopes),
                key.key_prefix, key.create_time, key.expire_time, key_hash,
            ),
        )  # fmt: skip
        await execute(
            self._cql,
            await self._q("INSERT INTO {ks}.api_keys_by_hash (key_hash, user_id, key_id) VALUES (?, ?, ?)"),
            (key_hash, uuid.UUID(key.user_id), uuid.UUID(key.key_id)),
        )

    async def claim_request(self, user_id: str, request_id: str, key_id: str) -> str:
        """Record request_id -> key_id once; returns the key id the request maps to."""
        rows = await execute(
            self._cql,
            await self._q(
                "INSERT INTO {ks}.api_key_requests (user_id, request_id, key_id) VALUES (?, ?, ?) "
                "IF NOT EXISTS USING TTL 86400"
            ),
            (uuid.UUID(user_id), request_id, uuid.UUID(key_id)),
        )
        applied = bool(rows[0][0])
        return key_id if applied else str(rows[0].key_id)

    async def get(self, user_id: str, key_id: str) -> ApiKey | None:
        try:
            keys = (uuid.UUID(user_id), uuid.UUID(key_id))
        except ValueError:
            return None
        rows = await execute(
            self._cql, await self._q("SELECT * FROM {ks}.api_keys WHERE user_id = ? AND key_id = ?"), keys
        )
        return _api_key(rows[0]) if rows else None

    async def by_hash(self, key_hash: str) -> ApiKey | None:
        rows = await execute(
            self._cql,
            await self._q("SELECT user_id, key_id FROM {ks}.api_keys_by_hash WHERE key_hash = ?"),
            (key_hash,),
        )
        if not rows:
            return None
        return await self.get(str(rows[0].user_id), str(rows[0].key_id))

    async def list(self, user_id: str) -> list[ApiKey]:
        rows = await execute(
            self._cql, await self._q("SELECT * FROM {ks}.api_keys WHERE user_id = ?"), (uuid.UUID(user_id),)
        )
        return [_api_key(row) for row in rows]

    async def revoke(self, user_id: str, key_id: str, when: datetime) -> None:
        await execute(
            self._cql,
            await self._q("UPDATE {ks}.api_keys SET revoke_time = ? WHERE user_id = ? AND key_id = ?"),
            (when, uuid.UUID(user_id), uuid.UUID(key_id)),
        )

    async def erase_user(self, user_id: str) -> int:
        """Delete every key of a user, its digest lookup and its request ids; returns how many keys."""
        key = uuid.UUID(user_id)
        rows = await execute(
            self._cql, await self._q("SELECT key_id, key_hash FROM {ks}.api_keys WHERE user_id = ?"), (key,)
        )
        for row in rows:
            if row.key_hash:
                await execute(
                    self._cql,
                    await self._q("DELETE FROM {ks}.api_keys_by_hash WHERE key_hash = ?"),
                    (row.key_hash,),
                )
        await execute(self._cql, await self._q("DELETE FROM {ks}.api_keys WHERE user_id = ?"), (key,))
        await execute(self._cql, await self._q("DELETE FROM {ks}.api_key_requests WHERE user_id = ?"), (key,))
        return len(rows)


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        user_id=str(row.user_id),
        key_id=str(row.key_id),
        display_name=row.display_name or "",
        scopes=frozenset(row.scopes or ()),
        key_prefix=row.key_prefix or "",
        create_time=req(row.create_time),
        expire_time=utc(row.expire_time),
        revoke_time=utc(row.revoke_time),
    )

"""The signing key ring's rows: each private key wrapped (AES-256-GCM) by the key-encryption
key, so the table alone signs nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from parley_core.cassandra import execute
from svc_session.store._table import BUCKET, Table, req


@dataclass(frozen=True)
class StoredKey:
    kid: str
    create_time: datetime
    #: When it starts signing: after it has been published long enough for every JWKS
    #: cache to have it.
    activate_time: datetime
    wrapped: bytes
    #: Which key-encryption key wrapped it (a fingerprint, never the key).
    kek_id: str


class SigningKeyStore(Table):
    SCHEMA = (
        """CREATE TABLE IF NOT EXISTS signing_key_ring (
            bucket int, create_time timestamp, kid text, activate_time timestamp, wrapped_key blob,
            kek_id text, PRIMARY KEY ((bucket), create_time, kid))
            WITH CLUSTERING ORDER BY (create_time DESC, kid ASC)""",
    )

    async def insert(self, key: StoredKey) -> None:
        await execute(
            self._cql,
            await self._q(
                "INSERT INTO {ks}.signing_key_ring (bucket, create_time, kid, activate_time, wrapped_key, "
                "kek_id) VALUES (?, ?, ?, ?, ?, ?)"
            ),
            (BUCKET, key.create_time, key.kid, key.activate_time, key.wrapped, key.kek_id),
        )

    async def recent(self, limit: int = 4) -> list[StoredKey]:
        """The newest keys, newest first."""
        rows = await execute(
            self._cql,
            await self._q(
                "SELECT kid, create_time, activate_time, wrapped_key, kek_id FROM {ks}.signing_key_ring "
                "WHERE bucket = ? LIMIT ?"
            ),
            (BUCKET, limit),
        )
        return [
            StoredKey(r.kid, req(r.create_time), req(r.activate_time), bytes(r.wrapped_key), r.kek_id or "")
            for r in rows
        ]

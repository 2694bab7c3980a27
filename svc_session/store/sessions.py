"""Sessions and their refresh tokens.

A refresh token row is keyed by the token's SHA-256 digest. Using it is an LWT that marks
it used and, in the same write, stores its successor (the new credentials) encrypted
under a key derived from the token itself: a retry that presents the same token within the
grace window can read the same successor, and nobody without the token can. Every cell,
`used` included, expires with the token.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from parley_core.cassandra import execute
from svc_session.model import RefreshToken, Session
from svc_session.store._table import Table, req, utc


class SessionTokenStore(Table):
    SCHEMA = (
        """CREATE TABLE IF NOT EXISTS sessions (
            user_id uuid, session_id uuid, create_time timestamp, last_refresh_time timestamp,
            expire_time timestamp, user_agent text, client_address text, revoke_time timestamp,
            PRIMARY KEY ((user_id), session_id))""",
        """CREATE TABLE IF NOT EXISTS refresh_tokens (
            token_hash text PRIMARY KEY, user_id uuid, session_id uuid, used boolean,
            expire_time timestamp, used_time timestamp, successor blob)""",
        # Which refresh tokens a user has, so erasure finds them without a scan.
        """CREATE TABLE IF NOT EXISTS refresh_tokens_by_user (
            user_id uuid, token_hash text, PRIMARY KEY ((user_id), token_hash))""",
    )
    COLUMNS = (("refresh_tokens", "used_time", "timestamp"), ("refresh_tokens", "successor", "blob"))

    async def insert_session(self, session: Session) -> None:
        await execute(
            self._cql,
            await self._q(
                "INSERT INTO {ks}.sessions (user_id, session_id, create_time, last_refresh_time, "
                "expire_time, user_agent, client_address) VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?"
            ),
            (
                uuid.UUID(session.user_id), uuid.UUID(session.session_id), session.create_time,
                session.last_refresh_time, session.expire_time, session.user_agent, session.client_address,
                _ttl(session.expire_time, session.create_time),
            ),
        )  # fmt: skip

    async def get_session(self, user_id: str, session_id: str) -> Session | None:
        try:
            keys = (uuid.UUID(user_id), uuid.UUID(session_id))
        except ValueError:
            return None
        rows = await execute(
            self._cql, await self._q("SELECT * FROM {ks}.sessions WHERE user_id = ? AND session_id = ?"), keys
        )
        return _session(rows[0]) if rows and rows[0].create_time else None

    async def list_sessions(self, user_id: str) -> list[Session]:
        rows = await execute(
            self._cql, await self._q("SELECT * FROM {ks}.sessions WHERE user_id = ?"), (uuid.UUID(user_id),)
        )
        return [_session(row) for row in rows if row.create_time]

    async def touch_session(self, session: Session, when: datetime, expire_time: datetime) -> None:
        await execute(
            self._cql,
            await self._q(
                "INSERT INTO {ks}.sessions (user_id, session_id, create_time, last_refresh_time, "
                "expire_time, user_agent, client_address) VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?"
            ),
            (
                uuid.UUID(session.user_id), uuid.UUID(session.session_id), session.create_time, when,
                expire_time, session.user_agent, session.client_address, _ttl(expire_time, when),
            ),
        )  # fmt: skip

    async def revoke_session(self, session: Session, when: datetime) -> None:
        await execute(
            self._cql,
            await self._q(
                "UPDATE {ks}.sessions USING TTL ? SET revoke_time = ? WHERE user_id = ? AND session_id = ?"
            ),
            (
                _ttl(session.expire_time, when),
                when,
                uuid.UUID(session.user_id),
                uuid.UUID(session.session_id),
            ),
        )

    async def insert_refresh_token(self, token: RefreshToken, now: datetime) -> None:
        await execute(
            self._cql,
            await self._q(
                "INSERT INTO {ks}.refresh_tokens_by_user (user_id, token_hash) VALUES (?, ?) USING TTL ?"
            ),
            (uuid.UUID(token.user_id), token.token_hash, _ttl(token.expire_time, now)),
        )
        await execute(
            self._cql,
            await self._q(
                "INSERT INTO {ks}.refresh_tokens (token_hash, user_id, session_id, used, expire_time) "
                "VALUES (?, ?, ?, false, ?) USING TTL ?"
            ),
            (
                token.token_hash, uuid.UUID(token.user_id), uuid.UUID(token.session_id), token.expire_time,
                _ttl(token.expire_time, now),
            ),
        )  # fmt: skip

    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None:
        rows = await execute(
            self._cql, await self._q("SELECT * FROM {ks}.refresh_tokens WHERE token_hash = ?"), (token_hash,)
        )
        return _refresh(rows[0]) if rows and rows[0].user_id else None

    async def use_refresh_token(
        self, token: RefreshToken, when: datetime, successor: bytes
    ) -> RefreshToken | None:
        """Mark the token used with its successor; None when it won, the used row when not.

        The losing caller gets the row as the winner wrote it (a linearizable read), so it
        can tell a retry within the grace window from a reuse.
        """
        rows = await execute(
            self._cql,
            await self._q(
                "UPDATE {ks}.refresh_tokens USING TTL ? SET used = true, used_time = ?, successor = ? "
                "WHERE token_hash = ? IF used = false"
            ),
            (_ttl(token.expire_time, when), when, successor, token.token_hash),
        )
        if rows and rows[0][0]:
            return None
        found = await self._serial_read(
            "SELECT * FROM {ks}.refresh_tokens WHERE token_hash = ?", (token.token_hash,)
        )
        return _refresh(found[0]) if found and found[0].user_id else token

    async def erase_user(self, user_id: str) -> int:
        """Delete every session and refresh token of a user; returns how many rows went."""
        key = uuid.UUID(user_id)
        hashes = await execute(
            self._cql,
            await self._q("SELECT token_hash FROM {ks}.refresh_tokens_by_user WHERE user_id = ?"),
            (key,),
        )
        for row in hashes:
            await execute(
                self._cql,
                await self._q("DELETE FROM {ks}.refresh_tokens WHERE token_hash = ?"),
                (row.token_hash,),
            )
        sessions = await execute(
            self._cql, await self._q("SELECT session_id FROM {ks}.sessions WHERE user_id = ?"), (key,)
        )
        await execute(self._cql, await self._q("DELETE FROM {ks}.sessions WHERE user_id = ?"), (key,))
        await execute(
            self._cql, await self._q("DELETE FROM {ks}.refresh_tokens_by_user WHERE user_id = ?"), (key,)
        )
        return len(hashes) + len(sessions)


def _ttl(until: datetime, now: datetime) -> int:
    """Seconds from now until `until`, at least one (Cassandra's TTL is whole seconds)."""
    return max(1, int((until - now).total_seconds()) + 1)


def _session(row: Any) -> Session:
    return Session(
        user_id=str(row.user_id),
        session_id=str(row.session_id),
        create_time=req(row.create_time),
        last_refresh_time=req(row.last_refresh_time),
        expire_time=req(row.expire_time),
        user_agent=row.user_agent or "",
        client_address=row.client_address or "",
        revoke_time=utc(row.revoke_time),
    )


def _refresh(row: Any) -> RefreshToken:
    return RefreshToken(
        token_hash=row.token_hash,
        user_id=str(row.user_id),
        session_id=str(row.session_id),
        used=bool(row.used),
        expire_time=req(row.expire_time),
        used_time=utc(row.used_time),
        successor=bytes(row.successor) if row.successor else b"",
    )

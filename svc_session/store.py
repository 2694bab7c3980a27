"""svc_session's Cassandra adapter: schema, prepared statements, rows <-> records.

Every statement runs at LOCAL_QUORUM; uniqueness and single use (emails, refresh and reset
tokens, idempotent creates) rely on lightweight transactions at LOCAL_SERIAL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from cassandra.cluster import Session as CqlSession

from parley_core.cassandra import create_keyspace, execute, execute_lwt
from svc_session.model import ApiKey, RefreshToken, Session, User

#: Single-partition tables (the user directory, signing keys, outbox) use this bucket; at
#: the scale where one partition is too big they are split by a hash prefix.
BUCKET = 0

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS users (
        user_id uuid PRIMARY KEY, email text, display_name text, password_hash text,
        role text, tier text, disabled boolean, create_time timestamp, update_time timestamp,
        version int)""",
    "CREATE TABLE IF NOT EXISTS users_by_email (email text PRIMARY KEY, user_id uuid)",
    """CREATE TABLE IF NOT EXISTS user_directory (
        bucket int, email text, user_id uuid, PRIMARY KEY ((bucket), email))""",
    """CREATE TABLE IF NOT EXISTS sessions (
        user_id uuid, session_id uuid, create_time timestamp, last_refresh_time timestamp,
        expire_time timestamp, user_agent text, client_address text, revoke_time timestamp,
        PRIMARY KEY ((user_id), session_id))""",
    """CREATE TABLE IF NOT EXISTS refresh_tokens (
        token_hash text PRIMARY KEY, user_id uuid, session_id uuid, used boolean,
        expire_time timestamp)""",
    """CREATE TABLE IF NOT EXISTS api_keys (
        user_id uuid, key_id uuid, display_name text, scopes set<text>, key_prefix text,
        create_time timestamp, expire_time timestamp, revoke_time timestamp,
        PRIMARY KEY ((user_id), key_id))""",
    "CREATE TABLE IF NOT EXISTS api_keys_by_hash (key_hash text PRIMARY KEY, user_id uuid, key_id uuid)",
    """CREATE TABLE IF NOT EXISTS api_key_requests (
        user_id uuid, request_id text, key_id uuid, PRIMARY KEY ((user_id), request_id))""",
    "CREATE TABLE IF NOT EXISTS password_resets (token_hash text PRIMARY KEY, user_id uuid, used boolean)",
    """CREATE TABLE IF NOT EXISTS outbox (
        bucket int, message_id timeuuid, recipient text, subject text, body text, sent boolean,
        PRIMARY KEY ((bucket), message_id))""",
    """CREATE TABLE IF NOT EXISTS signing_keys (
        bucket int, create_time timestamp, kid text, private_jwk text,
        PRIMARY KEY ((bucket), create_time, kid)) WITH CLUSTERING ORDER BY (create_time DESC, kid ASC)""",
]


def _utc(value: datetime | None) -> datetime | None:
    """The driver returns naive UTC datetimes; the domain works with aware ones."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _req(value: datetime | None) -> datetime:
    converted = _utc(value)
    assert converted is not None
    return converted


class SessionStore:
    """All of svc_session's reads and writes."""

    def __init__(self, session: CqlSession, keyspace: str) -> None:
        self._cql = session
        self._ks = keyspace
        self._prepared: dict[str, Any] = {}

    @classmethod
    def open(cls, session: CqlSession, keyspace: str, replication_factor: int) -> SessionStore:
        """Create the keyspace and tables if needed (idempotent), then prepare statements."""
        create_keyspace(session, keyspace, replication_factor)
        for statement in SCHEMA:
            session.execute(
                statement.replace("CREATE TABLE IF NOT EXISTS ", f"CREATE TABLE IF NOT EXISTS {keyspace}.")
            )
        return cls(session, keyspace)

    def _q(self, cql: str) -> Any:
        statement = self._prepared.get(cql)
        if statement is None:
            statement = self._cql.prepare(cql.replace("{ks}", self._ks))
            self._prepared[cql] = statement
        return statement

    # Users ---------------------------------------------------------------------------

    async def insert_user(self, user: User) -> None:
        await execute(
            self._cql,
            self._q(
                "INSERT INTO {ks}.users (user_id, email, display_name, password_hash, role, tier, disabled, "
                "create_time, update_time, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            (
                uuid.UUID(user.user_id), user.email, user.display_name, user.password_hash, user.role,
                user.tier, user.disabled, user.create_time, user.update_time, user.version,
            ),
        )  # fmt: skip

    async def delete_user(self, user_id: str) -> None:
        await execute(self._cql, self._q("DELETE FROM {ks}.users WHERE user_id = ?"), (uuid.UUID(user_id),))

    async def claim_email(self, email: str, user_id: str) -> bool:
        """Reserve email for user_id; False when another account holds it."""
        return await execute_lwt(
            self._cql,
            self._q("INSERT INTO {ks}.users_by_email (email, user_id) VALUES (?, ?) IF NOT EXISTS"),
            (email, uuid.UUID(user_id)),
        )

    async def add_to_directory(self, email: str, user_id: str) -> None:
        await execute(
            self._cql,
            self._q("INSERT INTO {ks}.user_directory (bucket, email, user_id) VALUES (?, ?, ?)"),
            (BUCKET, email, uuid.UUID(user_id)),
        )

    async def user_id_by_email(self, email: str) -> str | None:
        rows = await execute(
            self._cql, self._q("SELECT user_id FROM {ks}.users_by_email WHERE email = ?"), (email,)
        )
        return str(rows[0].user_id) if rows else None

    async def get_user(self, user_id: str) -> User | None:
        try:
            key = uuid.UUID(user_id)
        except ValueError:
            return None
        rows = await execute(self._cql, self._q("SELECT * FROM {ks}.users WHERE user_id = ?"), (key,))
        return _user(rows[0]) if rows else None

    async def update_user(self, user: User, expected_version: int) -> bool:
        """Write role, tier, disabled and password if the stored version is still expected."""
        return await execute_lwt(
            self._cql,
            self._q(
                "UPDATE {ks}.users SET role = ?, tier = ?, disabled = ?, password_hash = ?, update_time = ?, "
                "version = ? WHERE user_id = ? IF version = ?"
            ),
            (
                user.role, user.tier, user.disabled, user.password_hash, user.update_time, user.version,
                uuid.UUID(user.user_id), expected_version,
            ),
        )  # fmt: skip

    async def list_directory(self, after_email: str, prefix: str, limit: int) -> list[tuple[str, str]]:
        """(email, user_id) pairs in email order, after after_email, starting with prefix."""
        lower = max(after_email, prefix)
        if prefix:
            rows = await execute(
                self._cql,
                self._q(
                    "SELECT email, user_id FROM {ks}.user_directory WHERE bucket = ? AND email > ? "
                    "AND email < ? LIMIT ?"
                ),
                (BUCKET, lower, prefix + "\U0010ffff", limit),
            )
        else:
            rows = await execute(
                self._cql,
                self._q(
                    "SELECT email, user_id FROM {ks}.user_directory WHERE bucket = ? AND email > ? LIMIT ?"
                ),
                (BUCKET, lower, limit),
            )
        return [(row.email, str(row.user_id)) for row in rows]

    # Sessions and refresh tokens -------------------------------------------------------

    async def insert_session(self, session: Session) -> None:
        await execute(
            self._cql,
            self._q(
                "INSERT INTO {ks}.sessions (user_id, session_id, create_time, last_refresh_time, "
                "expire_time, user_agent, client_address) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ),
            (
                uuid.UUID(session.user_id), uuid.UUID(session.session_id), session.create_time,
                session.last_refresh_time, session.expire_time, session.user_agent, session.client_address,
            ),
        )  # fmt: skip

    async def get_session(self, user_id: str, session_id: str) -> Session | None:
        try:
            keys = (uuid.UUID(user_id), uuid.UUID(session_id))
        except ValueError:
            return None
        rows = await execute(
            self._cql, self._q("SELECT * FROM {ks}.sessions WHERE user_id = ? AND session_id = ?"), keys
        )
        return _session(rows[0]) if rows else None

    async def list_sessions(self, user_id: str) -> list[Session]:
        rows = await execute(
            self._cql, self._q("SELECT * FROM {ks}.sessions WHERE user_id = ?"), (uuid.UUID(user_id),)
        )
        return [_session(row) for row in rows]

    async def touch_session(
        self, user_id: str, session_id: str, when: datetime, expire_time: datetime
    ) -> None:
        await execute(
            self._cql,
            self._q(
                "UPDATE {ks}.sessions SET last_refresh_time = ?, expire_time = ? "
                "WHERE user_id = ? AND session_id = ?"
            ),
            (when, expire_time, uuid.UUID(user_id), uuid.UUID(session_id)),
        )

    async def revoke_session(self, user_id: str, session_id: str, when: datetime) -> None:
        await execute(
            self._cql,
            self._q("UPDATE {ks}.sessions SET revoke_time = ? WHERE user_id = ? AND session_id = ?"),
            (when, uuid.UUID(user_id), uuid.UUID(session_id)),
        )

    async def insert_refresh_token(self, token: RefreshToken, ttl_s: int) -> None:
        await execute(
            self._cql,
            self._q(
                "INSERT INTO {ks}.refresh_tokens (token_hash, user_id, session_id, used, expire_time) "
                "VALUES (?, ?, ?, false, ?) USING TTL ?"
            ),
            (
                token.token_hash,
                uuid.UUID(token.user_id),
                uuid.UUID(token.session_id),
                token.expire_time,
                ttl_s,
            ),
        )

    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None:
        rows = await execute(
            self._cql, self._q("SELECT * FROM {ks}.refresh_tokens WHERE token_hash = ?"), (token_hash,)
        )
        if not rows:
            return None
        row = rows[0]
        return RefreshToken(
            row.token_hash, str(row.user_id), str(row.session_id), bool(row.used), _req(row.expire_time)
        )

    async def use_refresh_token(self, token_hash: str) -> bool:
        """Mark the token used; False when it already was (a reuse)."""
        return await execute_lwt(
            self._cql,
            self._q("UPDATE {ks}.refresh_tokens SET used = true WHERE token_hash = ? IF used = false"),
            (token_hash,),
        )

    # API keys ------------------------------------------------------------------------

    async def insert_api_key(self, key: ApiKey, key_hash: str) -> None:
        await execute(
            self._cql,
            self._q(
                "INSERT INTO {ks}.api_keys (user_id, key_id, display_name, scopes, key_prefix, create_time, "
                "expire_time) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ),
            (
                uuid.UUID(key.user_id), uuid.UUID(key.key_id), key.display_name, set(key.scopes),
                key.key_prefix, key.create_time, key.expire_time,
            ),
        )  # fmt: skip
        await execute(
            self._cql,
            self._q("INSERT INTO {ks}.api_keys_by_hash (key_hash, user_id, key_id) VALUES (?, ?, ?)"),
            (key_hash, uuid.UUID(key.user_id), uuid.UUID(key.key_id)),
        )

    async def claim_api_key_request(self, user_id: str, request_id: str, key_id: str) -> str:
        """Record request_id -> key_id once; returns the key id the request maps to."""
        rows = await execute(
            self._cql,
            self._q(
                "INSERT INTO {ks}.api_key_requests (user_id, request_id, key_id) VALUES (?, ?, ?) "
                "IF NOT EXISTS USING TTL 86400"
            ),
            (uuid.UUID(user_id), request_id, uuid.UUID(key_id)),
        )
        applied = bool(rows[0][0])
        return key_id if applied else str(rows[0].key_id)

    async def get_api_key(self, user_id: str, key_id: str) -> ApiKey | None:
        try:
            keys = (uuid.UUID(user_id), uuid.UUID(key_id))
        except ValueError:
            return None
        rows = await execute(
            self._cql, self._q("SELECT * FROM {ks}.api_keys WHERE user_id = ? AND key_id = ?"), keys
        )
        return _api_key(rows[0]) if rows else None

    async def api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        rows = await execute(
            self._cql,
            self._q("SELECT user_id, key_id FROM {ks}.api_keys_by_hash WHERE key_hash = ?"),
            (key_hash,),
        )
        if not rows:
            return None
        return await self.get_api_key(str(rows[0].user_id), str(rows[0].key_id))

    async def list_api_keys(self, user_id: str) -> list[ApiKey]:
        rows = await execute(
            self._cql, self._q("SELECT * FROM {ks}.api_keys WHERE user_id = ?"), (uuid.UUID(user_id),)
        )
        return [_api_key(row) for row in rows]

    async def revoke_api_key(self, user_id: str, key_id: str, when: datetime) -> None:
        await execute(
            self._cql,
            self._q("UPDATE {ks}.api_keys SET revoke_time = ? WHERE user_id = ? AND key_id = ?"),
            (when, uuid.UUID(user_id), uuid.UUID(key_id)),
        )

    # Password resets and the outbox --------------------------------------------------

    async def insert_reset(self, token_hash: str, user_id: str, ttl_s: int) -> None:
        await execute(
            self._cql,
            self._q(
                "INSERT INTO {ks}.password_resets (token_hash, user_id, used) "
                "VALUES (?, ?, false) USING TTL ?"
            ),
            (token_hash, uuid.UUID(user_id), ttl_s),
        )

    async def use_reset(self, token_hash: str) -> str | None:
        """Mark a reset token used; the user id when it was valid and unused."""
        rows = await execute(
            self._cql,
            self._q("UPDATE {ks}.password_resets SET used = true WHERE token_hash = ? IF used = false"),
            (token_hash,),
        )
        if not rows or not rows[0][0]:
            return None
        found = await execute(
            self._cql, self._q("SELECT user_id FROM {ks}.password_resets WHERE token_hash = ?"), (token_hash,)
        )
        return str(found[0].user_id) if found and found[0].user_id else None

    async def enqueue_mail(self, recipient: str, subject: str, body: str) -> uuid.UUID:
        message_id = uuid.uuid1()
        await execute(
            self._cql,
            self._q(
                "INSERT INTO {ks}.outbox (bucket, message_id, recipient, subject, body, sent) "
                "VALUES (?, ?, ?, ?, ?, false) USING TTL 604800"
            ),
            (BUCKET, message_id, recipient, subject, body),
        )
        return message_id

    async def pending_mail(self, limit: int = 100) -> list[tuple[uuid.UUID, str, str, str]]:
        rows = await execute(
            self._cql,
            self._q(
                "SELECT message_id, recipient, subject, body, sent FROM {ks}.outbox WHERE bucket = ? LIMIT ?"
            ),
            (BUCKET, limit),
        )
        return [(r.message_id, r.recipient, r.subject, r.body) for r in rows if not r.sent]

    async def mark_mail_sent(self, message_id: uuid.UUID) -> None:
        await execute(
            self._cql,
            self._q("DELETE FROM {ks}.outbox WHERE bucket = ? AND message_id = ?"),
            (BUCKET, message_id),
        )

    # Signing keys --------------------------------------------------------------------

    async def insert_signing_key(self, kid: str, private_jwk: str, when: datetime) -> None:
        await execute(
            self._cql,
            self._q(
                "INSERT INTO {ks}.signing_keys (bucket, create_time, kid, private_jwk) VALUES (?, ?, ?, ?)"
            ),
            (BUCKET, when, kid, private_jwk),
        )

    async def recent_signing_keys(self, limit: int = 4) -> list[tuple[str, str, datetime]]:
        """(kid, private JWK, create time) of the newest keys, newest first."""
        rows = await execute(
            self._cql,
            self._q("SELECT kid, private_jwk, create_time FROM {ks}.signing_keys WHERE bucket = ? LIMIT ?"),
            (BUCKET, limit),
        )
        return [(r.kid, r.private_jwk, _req(r.create_time)) for r in rows]


def _user(row: Any) -> User:
    return User(
        user_id=str(row.user_id),
        email=row.email,
        display_name=row.display_name or "",
        password_hash=row.password_hash or "",
        role=row.role or "user",
        tier=row.tier or "",
        disabled=bool(row.disabled),
        create_time=_req(row.create_time),
        update_time=_req(row.update_time),
        version=int(row.version or 0),
    )


def _session(row: Any) -> Session:
    return Session(
        user_id=str(row.user_id),
        session_id=str(row.session_id),
        create_time=_req(row.create_time),
        last_refresh_time=_req(row.last_refresh_time),
        expire_time=_req(row.expire_time),
        user_agent=row.user_agent or "",
        client_address=row.client_address or "",
        revoke_time=_utc(row.revoke_time),
    )


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        user_id=str(row.user_id),
        key_id=str(row.key_id),
        display_name=row.display_name or "",
        scopes=frozenset(row.scopes or ()),
        key_prefix=row.key_prefix or "",
        create_time=_req(row.create_time),
        expire_time=_utc(row.expire_time),
        revoke_time=_utc(row.revoke_time),
    )

"""Accounts: the users table, the email index (uniqueness through an LWT) and the directory.

An account whose email is not verified is written with a TTL of the unverified lifetime:
when nobody proves the address in time, Cassandra forgets the account and its email is
free again. Verification writes the same rows again without a TTL.
"""

from __future__ import annotations

import uuid
from typing import Any

from parley_core.cassandra import execute, execute_lwt
from svc_session.model import User
from svc_session.store._table import BUCKET, Table, req, utc


class UserStore(Table):
    SCHEMA = (
        """CREATE TABLE IF NOT EXISTS users (
            user_id uuid PRIMARY KEY, email text, display_name text, password_hash text,
            role text, tier text, disabled boolean, create_time timestamp, update_time timestamp,
            version int, email_verified boolean, not_before timestamp)""",
        "CREATE TABLE IF NOT EXISTS users_by_email (email text PRIMARY KEY, user_id uuid)",
        """CREATE TABLE IF NOT EXISTS user_directory (
            bucket int, email text, user_id uuid, PRIMARY KEY ((bucket), email))""",
    )
    COLUMNS = (("users", "email_verified", "boolean"), ("users", "not_before", "timestamp"))

    async def insert(self, user: User, ttl_s: int = 0) -> None:
        """Write the whole row; ttl_s > 0 makes it expire (an unverified account)."""
        await execute(
            self._cql,
            await self._q(
                "INSERT INTO {ks}.users (user_id, email, display_name, password_hash, role, tier, disabled, "
                "create_time, update_time, version, email_verified, not_before) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"
            ),
            (*_values(user), ttl_s),
        )

    async def delete(self, user_id: str) -> None:
        await execute(
            self._cql, await self._q("DELETE FROM {ks}.users WHERE user_id = ?"), (uuid.UUID(user_id),)
        )

    async def claim_email(self, email: str, user_id: str, ttl_s: int = 0) -> bool:
        """Reserve email for user_id; False when another account holds it."""
        return await execute_lwt(
            self._cql,
            await self._q(
                "INSERT INTO {ks}.users_by_email (email, user_id) VALUES (?, ?) IF NOT EXISTS USING TTL ?"
            ),
            (email, uuid.UUID(user_id), ttl_s),
        )

    async def keep_email(self, email: str, user_id: str) -> bool:
        """Make user_id's claim on email permanent (no TTL); False when it lost the claim."""
        return await execute_lwt(
            self._cql,
            await self._q("UPDATE {ks}.users_by_email SET user_id = ? WHERE email = ? IF user_id = ?"),
            (uuid.UUID(user_id), email, uuid.UUID(user_id)),
        )

    async def add_to_directory(self, email: str, user_id: str, ttl_s: int = 0) -> None:
        await execute(
            self._cql,
            await self._q(
                "INSERT INTO {ks}.user_directory (bucket, email, user_id) VALUES (?, ?, ?) USING TTL ?"
            ),
            (BUCKET, email, uuid.UUID(user_id), ttl_s),
        )

    async def id_by_email(self, email: str) -> str | None:
        rows = await execute(
            self._cql, await self._q("SELECT user_id FROM {ks}.users_by_email WHERE email = ?"), (email,)
        )
        return str(rows[0].user_id) if rows and rows[0].user_id else None

    async def get(self, user_id: str) -> User | None:
        try:
            key = uuid.UUID(user_id)
        except ValueError:
            return None
        rows = await execute(self._cql, await self._q("SELECT * FROM {ks}.users WHERE user_id = ?"), (key,))
        # A row without its email is the remains of an expired unverified account.
        return _user(rows[0]) if rows and rows[0].email else None

    async def update(self, user: User, expected_version: int, *, ttl_s: int) -> bool:
        """Write the whole row if the stored version is still the expected one.

        Every column is written, with ttl_s (0: no expiry), so a change never leaves a
        cell behind that outlives an unverified account, and verification (ttl_s 0)
        makes the whole account permanent.
        """
        return await execute_lwt(
            self._cql,
            await self._q(
                "UPDATE {ks}.users USING TTL ? SET email = ?, display_name = ?, password_hash = ?, role = ?, "
                "tier = ?, disabled = ?, create_time = ?, update_time = ?, version = ?, email_verified = ?, "
                "not_before = ? WHERE user_id = ? IF version = ?"
            ),
            (ttl_s, *_values(user)[1:], uuid.UUID(user.user_id), expected_version),
        )

    async def list_directory(self, after_email: str, prefix: str, limit: int) -> list[tuple[str, str]]:
        """(email, user_id) pairs in email order, after after_email, starting with prefix."""
        upper = prefix + "\U0010ffff"
        if after_email >= prefix:
            where, lower = "email > ?", after_email  # a later page
        else:
            where, lower = "email >= ?", prefix  # the first page: the prefix itself may be an email
        rows = await execute(
            self._cql,
            await self._q(
                f"SELECT email, user_id FROM {{ks}}.user_directory WHERE bucket = ? AND {where} "  # noqa: S608 - fixed text
                "AND email < ? LIMIT ?"
            ),
            (BUCKET, lower, upper, limit),
        )
        return [(row.email, str(row.user_id)) for row in rows]

    async def erase(self, user_id: str, email: str) -> int:
        """Delete the account row, its email claim (if still its own) and directory entry."""
        await execute(
            self._cql, await self._q("DELETE FROM {ks}.users WHERE user_id = ?"), (uuid.UUID(user_id),)
        )
        if email:
            await execute_lwt(
                self._cql,
                await self._q("DELETE FROM {ks}.users_by_email WHERE email = ? IF user_id = ?"),
                (email, uuid.UUID(user_id)),
            )
            await execute(
                self._cql,
                await self._q("DELETE FROM {ks}.user_directory WHERE bucket = ? AND email = ?"),
                (BUCKET, email),
            )
        return 1


def _values(user: User) -> tuple[Any, ...]:
    return (
        uuid.UUID(user.user_id), user.email, user.display_name, user.password_hash, user.role, user.tier,
        user.disabled, user.create_time, user.update_time, user.version, user.email_verified, user.not_before,
    )  # fmt: skip


def _user(row: Any) -> User:
    return User(
        user_id=str(row.user_id),
        email=row.email,
        display_name=row.display_name or "",
        password_hash=row.password_hash or "",
        role=row.role or "user",
        tier=row.tier or "",
        disabled=bool(row.disabled),
        create_time=req(row.create_time),
        update_time=req(row.update_time),
        version=int(row.version or 0),
        # Accounts from before verification existed must prove their address too.
        email_verified=bool(row.email_verified),
        not_before=utc(row.not_before),
    )

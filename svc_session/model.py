"""svc_session's records: plain Python, independent of the wire and of storage."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime


def now() -> datetime:
    """Now, at the millisecond precision Cassandra stores, so a read equals what was written."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def digest(secret: str) -> str:
    """How a random secret (a token, an API key) is stored: its SHA-256.

    The secrets carry 256 bits of entropy, so a slow hash adds nothing.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def epoch_ms(moment: datetime | None) -> int:
    return 0 if moment is None else int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class User:
    user_id: str
    email: str
    display_name: str
    password_hash: str
    role: str  # "user" or "admin"
    tier: str
    disabled: bool
    create_time: datetime
    update_time: datetime
    version: int  # bumped by every update; the etag is derived from it
    #: The owner proved the address (the verification link, or a password reset).
    email_verified: bool = False
    #: Sessions started and tokens issued before this are over ("end all sessions", a
    #: password reset); None when that never happened.
    not_before: datetime | None = None

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    def started_before_cutoff(self, when: datetime) -> bool:
        """True when something that began at `when` was ended by `not_before`."""
        return self.not_before is not None and when < self.not_before


@dataclass(frozen=True)
class Session:
    user_id: str
    session_id: str
    create_time: datetime
    last_refresh_time: datetime
    expire_time: datetime
    user_agent: str
    client_address: str
    revoke_time: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.revoke_time is None and self.expire_time > now


@dataclass(frozen=True)
class ApiKey:
    user_id: str
    key_id: str
    display_name: str
    scopes: frozenset[str]
    key_prefix: str
    create_time: datetime
    expire_time: datetime | None = None
    revoke_time: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.revoke_time is None and (self.expire_time is None or self.expire_time > now)


@dataclass(frozen=True)
class RefreshToken:
    token_hash: str
    user_id: str
    session_id: str
    used: bool
    expire_time: datetime
    used_time: datetime | None = None
    #: The credentials that replaced it, encrypted under a key derived from the token.
    successor: bytes = b""


@dataclass(frozen=True)
class Credentials:
    access_token: str
    access_expire_time: datetime
    refresh_token: str = ""
    refresh_expire_time: datetime | None = None
    session_id: str = ""
    user_id: str = ""


@dataclass(frozen=True)
class Page:
    """One page of a listing and the opaque token of the next."""

    items: list[object] = field(default_factory=list)
    next_token: str = ""

"""svc_session's records: plain Python, independent of the wire and of storage."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


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

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'


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

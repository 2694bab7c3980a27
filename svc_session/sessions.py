"""Sessions and tokens: start a session, issue access and refresh tokens, refresh, end.

Access tokens are short-lived JWTs; a refresh token is an opaque random string stored as
its digest and used once. Ending things is immediate everywhere through the revocation
state in Redis (`parley_core.auth.Revocations`): one session (logout, revoke), or
everything a user had before a moment (the user's not-before time, checked against each
token's issue time), never a scan of session rows on the token path.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from parley_core.auth import USER_SCOPES, Principal, UserState
from parley_core.paging import offset_page
from svc_session import errors
from svc_session.keys import KeyRing
from svc_session.model import Credentials, Page, RefreshToken, Session, User, digest, epoch_ms, now
from svc_session.settings import SessionSettings
from svc_session.store import SessionTokenStore, UserStore

_log = structlog.get_logger("svc_session")


class RevocationWriter(Protocol):
    """What svc_session writes to the shared revocation state (parley_core.auth.Revocations)."""

    async def revoke_session(self, session_id: str, ttl_s: int) -> None: ...

    async def revoke_api_key(self, api_key_id: str, ttl_s: int) -> None: ...

    async def publish_user(self, user_id: str, state: UserState) -> None: ...


class Sessions:
    def __init__(
        self,
        settings: SessionSettings,
        users: UserStore,
        store: SessionTokenStore,
        keys: KeyRing,
        revocations: RevocationWriter,
    ) -> None:
        self._settings = settings
        self._users = users
        self._store = store
        self._keys = keys
        self._revocations = revocations

    @property
    def revocation_ttl_s(self) -> int:
        """How long an ended session or key must be remembered: as long as a token lives."""
        return self._settings.access_token_ttl_s + 60

    # Starting and issuing -------------------------------------------------------------

    async def start(self, user: User, user_agent: str, client_address: str) -> Credentials:
        moment = now()
        session = Session(
            user_id=user.user_id,
            session_id=str(uuid.uuid4()),
            create_time=moment,
            last_refresh_time=moment,
            expire_time=moment + timedelta(seconds=self._settings.refresh_token_ttl_s),
            user_agent=user_agent[:200],
            client_address=client_address,
        )
        await self._store.insert_session(session)
        credentials, refresh = await self._issue(user, session.session_id, moment)
        await self._store.insert_refresh_token(refresh, moment)
        return credentials

    async def _issue(self, user: User, session_id: str, moment: datetime) -> tuple[Credentials, RefreshToken]:
        secret = secrets.token_urlsafe(32)
        expires = moment + timedelta(seconds=self._settings.refresh_token_ttl_s)
        token, access_expires = await self.access_token(user, scopes=USER_SCOPES, session_id=session_id)
        credentials = Credentials(token, access_expires, secret, expires, session_id, user.user_id)
        return credentials, RefreshToken(digest(secret), user.user_id, session_id, False, expires)

    async def access_token(
        self, user: User, *, scopes: frozenset[str], session_id: str = "", api_key_id: str = ""
    ) -> tuple[str, datetime]:
        moment = now()
        expires = moment + timedelta(seconds=self._settings.access_token_ttl_s)
        claims: dict[str, object] = {
            "iss": self._settings.issuer,
            "aud": self._settings.audience,
            "sub": user.user_id,
            "iat": int(moment.timestamp()),
            # The issue time to the millisecond: a user's not-before time ends exactly the
            # tokens issued before it, whatever happens within the same second.
            "iat_ms": epoch_ms(moment),
            "nbf": int(moment.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": secrets.token_hex(8),
            "role": user.role,
            "tier": user.tier,
            "scope": " ".join(sorted(scopes)),
        }
        if session_id:
            claims["sid"] = session_id
        if api_key_id:
            claims["akid"] = api_key_id
        return await self._keys.sign(claims), expires

    # Refresh --------------------------------------------------------------------------

    async def refresh(self, refresh_token: str) -> Credentials:
        token_hash = digest(refresh_token)
        stored = await self._store.get_refresh_token(token_hash)
        moment = now()
        if stored is None or stored.expire_time <= moment:
            raise errors.invalid_refresh_token()
        if stored.used:
            return await self._reused(refresh_token, stored, moment)
        session = await self._store.get_session(stored.user_id, stored.session_id)
        user = await self._users.get(stored.user_id)
        if session is None or not self._usable(session, user, moment):
            raise errors.invalid_refresh_token("SESSION_ENDED")
        assert user is not None
        credentials, successor = await self._issue(user, session.session_id, moment)
        sealed = _seal(refresh_token, credentials)
        lost_to = await self._store.use_refresh_token(stored, moment, sealed)
        if lost_to is not None:
            # Another refresh of the same token won the race: a concurrent retry.
            return await self._reused(refresh_token, lost_to, moment)
        await self._store.insert_refresh_token(successor, moment)
        await self._store.touch_session(
            session, moment, moment + timedelta(seconds=self._settings.refresh_token_ttl_s)
        )
        return credentials

    async def _reused(self, refresh_token: str, stored: RefreshToken, moment: datetime) -> Credentials:
        """A used token again: a retry within the grace window gets the same credentials;
        anything else was stolen or replayed and ends the whole session."""
        grace = timedelta(seconds=self._settings.refresh_reuse_grace_s)
        if stored.used and stored.used_time is not None and moment - stored.used_time <= grace:
            credentials = _open(refresh_token, stored.successor)
            session = await self._store.get_session(stored.user_id, stored.session_id)
            user = await self._users.get(stored.user_id)
            if credentials is not None and session is not None and self._usable(session, user, moment):
                return credentials
        if not stored.used:
            raise errors.invalid_refresh_token()
        session = await self._store.get_session(stored.user_id, stored.session_id)
        if session is not None:
            await self._end(session, moment)
        _log.warning("refresh token reused; session revoked", user_id=stored.user_id)
        raise errors.invalid_refresh_token("REFRESH_TOKEN_REUSED")

    def _usable(self, session: Session, user: User | None, moment: datetime) -> bool:
        return (
            session.active(moment)
            and user is not None
            and not user.disabled
            and not user.started_before_cutoff(session.create_time)
        )

    # Ending ---------------------------------------------------------------------------

    async def logout(self, principal: Principal) -> None:
        if not principal.session_id:
            raise errors.api_key_sign_in_cannot("Logout")
        session = await self._store.get_session(principal.user_id, principal.session_id)
        if session is not None:
            await self._end(session, now())

    async def _end(self, session: Session, moment: datetime) -> None:
        await self._store.revoke_session(session, moment)
        await self._revocations.revoke_session(session.session_id, self.revocation_ttl_s)

    async def revoke_tokens_of_key(self, api_key_id: str) -> None:
        """End every access token issued from an API key, at once."""
        await self._revocations.revoke_api_key(api_key_id, self.revocation_ttl_s)

    async def list(self, user: User, size: int, token: str) -> Page:
        moment = now()
        active = [
            s
            for s in await self._store.list_sessions(user.user_id)
            if s.active(moment) and not user.started_before_cutoff(s.create_time)
        ]
        active.sort(key=lambda s: (s.last_refresh_time, s.session_id), reverse=True)
        items, next_token = offset_page(active, size, token)
        return Page(list(items), next_token)

    async def revoke(self, user_id: str, session_id: str) -> Session:
        session = await self._store.get_session(user_id, session_id)
        if session is None:
            raise errors.not_found("session", f"users/{user_id}/sessions/{session_id}")
        if session.revoke_time is None:
            moment = now()
            await self._end(session, moment)
            session = replace(session, revoke_time=moment)
        return session

    def cut_off(self, user: User) -> User:
        """user with every session and token before now ended (store it, then `publish`)."""
        return replace(user, not_before=now())

    async def publish(self, user: User) -> None:
        """Tell every service the user's current role, tier, state and not-before time."""
        await self._revocations.publish_user(
            user.user_id,
            UserState(
                role=user.role,
                tier=user.tier,
                disabled=user.disabled,
                not_before_ms=epoch_ms(user.not_before),
            ),
        )


def _successor_key(refresh_token: str) -> bytes:
    mac = hmac.HMAC(refresh_token.encode(), hashes.SHA256())
    mac.update(b"parley refresh successor v1")
    return mac.finalize()


def _seal(refresh_token: str, credentials: Credentials) -> bytes:
    """The successor credentials, readable only with the token they replace."""
    payload = json.dumps(
        {
            "a": credentials.access_token,
            "ae": credentials.access_expire_time.isoformat(),
            "r": credentials.refresh_token,
            "re": credentials.refresh_expire_time.isoformat() if credentials.refresh_expire_time else "",
            "s": credentials.session_id,
            "u": credentials.user_id,
        }
    ).encode()
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(_successor_key(refresh_token)).encrypt(nonce, payload, None)


def _open(refresh_token: str, sealed: bytes) -> Credentials | None:
    if len(sealed) < 13:
        return None
    try:
        payload = json.loads(AESGCM(_successor_key(refresh_token)).decrypt(sealed[:12], sealed[12:], None))
    except (InvalidTag, ValueError):
        return None
    return Credentials(
        access_token=payload["a"],
        access_expire_time=datetime.fromisoformat(payload["ae"]),
        refresh_token=payload["r"],
        refresh_expire_time=datetime.fromisoformat(payload["re"]) if payload["re"] else None,
        session_id=payload["s"],
        user_id=payload["u"],
    )

"""svc_session's domain: accounts, sign-in, sessions, API keys, resets. No wire types here.

Secrets (passwords, refresh tokens, reset tokens, API keys) are never stored or logged in
the clear: passwords as Argon2id hashes, the random tokens and keys as SHA-256 digests
(they carry 256 bits of entropy, so a slow hash adds nothing).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from parley_core.auth import USER_SCOPES, Principal, permission_denied
from parley_core.errors import FieldViolation
from parley_core.paging import offset_page
from parley_core.revocation import RedisRevocationList
from svc_session import errors
from svc_session.keys import KeyRing
from svc_session.mailbox import Mailer
from svc_session.model import ApiKey, Credentials, Page, RefreshToken, Session, User
from svc_session.passwords import hash_password, policy_violations, verify_password
from svc_session.settings import SessionSettings
from svc_session.store import SessionStore

_log = structlog.get_logger("svc_session")

#: Scopes an API key may carry: everything but account management.
API_KEY_SCOPES = USER_SCOPES - {"account"}
API_KEY_PREFIX = "pk_"


class AuthAttemptLimits(Protocol):
    """The brute-force buckets (svc_session.ratelimit.RateLimits)."""

    async def check_auth_attempt(self, client_address: str, email: str) -> None: ...


def _now() -> datetime:
    """Now, at the millisecond precision Cassandra stores, so a read equals what was written."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def normalise_email(email: str) -> str:
    return email.strip().lower()


def email_violations(field: str, email: str) -> list[FieldViolation]:
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or len(email) > 254 or any(c.isspace() for c in email):
        return [FieldViolation(field, "must be an email address such as ada@example.com")]
    return []


class Accounts:
    def __init__(
        self,
        settings: SessionSettings,
        store: SessionStore,
        keys: KeyRing,
        revocations: RedisRevocationList,
        limits: AuthAttemptLimits,
        mailer: Mailer,
    ) -> None:
        self._settings = settings
        self._store = store
        self._keys = keys
        self._revocations = revocations
        self._limits = limits
        self._mailer = mailer

    # Registration and sign-in --------------------------------------------------------

    async def register(
        self, email: str, password: str, display_name: str, user_agent: str, client_address: str
    ) -> tuple[User, Credentials]:
        email = normalise_email(email)
        display_name = display_name.strip()
        violations = email_violations("email", email) + policy_violations("password", password, email)
        if not 1 <= len(display_name) <= 100:
            violations.append(FieldViolation("display_name", "must be 1 to 100 characters"))
        if violations:
            raise errors.bad_request(*violations)
        await self._limits.check_auth_attempt(client_address, email)
        now = _now()
        role = "admin" if email in {normalise_email(e) for e in self._settings.admin_emails} else "user"
        user = User(
            user_id=str(uuid.uuid4()),
            email=email,
            display_name=display_name,
            password_hash=await hash_password(password),
            role=role,
            tier=self._settings.default_tier,
            disabled=False,
            create_time=now,
            update_time=now,
            version=1,
        )
        # The row is written first under a fresh id nobody knows, then the email is claimed
        # with a lightweight transaction: exactly one of many concurrent registrations wins,
        # and a loser removes its unreachable row.
        await self._store.insert_user(user)
        if not await self._store.claim_email(email, user.user_id):
            await self._store.delete_user(user.user_id)
            raise errors.email_taken()
        await self._store.add_to_directory(email, user.user_id)
        _log.info("user registered", user_id=user.user_id, role=role)
        return user, await self._start_session(user, user_agent, client_address)

    async def login_password(
        self, email: str, password: str, user_agent: str, client_address: str
    ) -> tuple[User, Credentials]:
        email = normalise_email(email)
        if not email or not password:
            raise errors.bad_request(
                *[FieldViolation(f"password.{name}", "must not be empty") for name, v in
                  (("email", email), ("password", password)) if not v]
            )  # fmt: skip
        await self._limits.check_auth_attempt(client_address, email)
        user_id = await self._store.user_id_by_email(email)
        user = await self._store.get_user(user_id) if user_id else None
        matched = await verify_password(user.password_hash if user else None, password)
        if user is None or not matched or user.disabled:
            raise errors.invalid_credentials()
        return user, await self._start_session(user, user_agent, client_address)

    async def login_api_key(self, key: str, client_address: str) -> tuple[User, Credentials]:
        if not key.startswith(API_KEY_PREFIX):
            raise errors.invalid_api_key()
        await self._limits.check_auth_attempt(client_address, "")
        api_key = await self._store.api_key_by_hash(digest(key))
        now = _now()
        user = await self._store.get_user(api_key.user_id) if api_key else None
        if api_key is None or user is None or not api_key.active(now) or user.disabled:
            raise errors.invalid_api_key()
        token, expires = await self._access_token(user, scopes=api_key.scopes, api_key_id=api_key.key_id)
        return user, Credentials(access_token=token, access_expire_time=expires, user_id=user.user_id)

    async def _start_session(self, user: User, user_agent: str, client_address: str) -> Credentials:
        now = _now()
        session = Session(
            user_id=user.user_id,
            session_id=str(uuid.uuid4()),
            create_time=now,
            last_refresh_time=now,
            expire_time=now + timedelta(seconds=self._settings.refresh_token_ttl_s),
            user_agent=user_agent[:200],
            client_address=client_address,
        )
        await self._store.insert_session(session)
        return await self._issue(user, session.session_id, now)

    async def _issue(self, user: User, session_id: str, now: datetime) -> Credentials:
        refresh = secrets.token_urlsafe(32)
        refresh_expires = now + timedelta(seconds=self._settings.refresh_token_ttl_s)
        await self._store.insert_refresh_token(
            RefreshToken(digest(refresh), user.user_id, session_id, False, refresh_expires),
            self._settings.refresh_token_ttl_s,
        )
        token, expires = await self._access_token(user, scopes=USER_SCOPES, session_id=session_id)
        return Credentials(token, expires, refresh, refresh_expires, session_id, user.user_id)

    async def _access_token(
        self, user: User, *, scopes: frozenset[str], session_id: str = "", api_key_id: str = ""
    ) -> tuple[str, datetime]:
        now = _now()
        expires = now + timedelta(seconds=self._settings.access_token_ttl_s)
        claims: dict[str, object] = {
            "iss": self._settings.issuer,
            "aud": self._settings.audience,
            "sub": user.user_id,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
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

    # Refresh, logout, sessions -------------------------------------------------------

    async def refresh(self, refresh_token: str) -> Credentials:
        if not refresh_token:
            raise errors.bad_request(FieldViolation("refresh_token", "must not be empty"))
        token_hash = digest(refresh_token)
        stored = await self._store.get_refresh_token(token_hash)
        now = _now()
        if stored is None or stored.expire_time <= now:
            raise errors.invalid_refresh_token()
        if not await self._store.use_refresh_token(token_hash):
            # A used token came back: it was stolen or replayed. End the whole session so
            # neither the thief nor the owner can go on with this chain of tokens.
            await self._end_session(stored.user_id, stored.session_id, now)
            _log.warning("refresh token reused; session revoked", user_id=stored.user_id)
            raise errors.invalid_refresh_token("REFRESH_TOKEN_REUSED")
        session = await self._store.get_session(stored.user_id, stored.session_id)
        user = await self._store.get_user(stored.user_id)
        if session is None or not session.active(now) or user is None or user.disabled:
            raise errors.invalid_refresh_token("SESSION_ENDED")
        await self._store.touch_session(
            user.user_id, session.session_id, now, now + timedelta(seconds=self._settings.refresh_token_ttl_s)
        )
        return await self._issue(user, session.session_id, now)

    async def logout(self, principal: Principal) -> None:
        if not principal.session_id:
            raise errors.api_key_sign_in_cannot("Logout")
        await self._end_session(principal.user_id, principal.session_id, _now())

    async def _end_session(self, user_id: str, session_id: str, now: datetime) -> None:
        await self._store.revoke_session(user_id, session_id, now)
        await self._revocations.revoke_session(session_id, self._settings.access_token_ttl_s + 60)

    async def get_user(self, user_id: str) -> User:
        user = await self._store.get_user(user_id)
        if user is None:
            raise errors.not_found("user", f"users/{user_id}")
        return user

    async def list_sessions(self, user_id: str, size: int, token: str) -> Page:
        now = _now()
        active = [s for s in await self._store.list_sessions(user_id) if s.active(now)]
        active.sort(key=lambda s: (s.last_refresh_time, s.session_id), reverse=True)
        items, next_token = offset_page(active, size, token)
        return Page(list(items), next_token)

    async def revoke_session(self, user_id: str, session_id: str) -> Session:
        session = await self._store.get_session(user_id, session_id)
        if session is None:
            raise errors.not_found("session", f"users/{user_id}/sessions/{session_id}")
        now = _now()
        if session.revoke_time is None:
            await self._end_session(user_id, session_id, now)
            session = replace(session, revoke_time=now)
        return session

    async def _end_all_sessions(self, user_id: str) -> None:
        now = _now()
        for session in await self._store.list_sessions(user_id):
            if session.revoke_time is None:
                await self._end_session(user_id, session.session_id, now)

    # Password reset ------------------------------------------------------------------

    async def request_password_reset(self, email: str, client_address: str) -> None:
        email = normalise_email(email)
        if violations := email_violations("email", email):
            raise errors.bad_request(*violations)
        await self._limits.check_auth_attempt(client_address, email)
        user_id = await self._store.user_id_by_email(email)
        user = await self._store.get_user(user_id) if user_id else None
        if user is None or user.disabled:
            return  # the same answer as for a real account
        token = secrets.token_urlsafe(32)
        await self._store.insert_reset(digest(token), user.user_id, self._settings.password_reset_ttl_s)
        minutes = self._settings.password_reset_ttl_s // 60
        await self._mailer.send(
            user.email,
            "Reset your Parley password",
            f"Someone asked to reset the password of this Parley account.\n\n"
            f"Reset token: {token}\n\nIt works once, within {minutes} minutes. "
            f"If it was not you, ignore this mail.\n",
        )

    async def reset_password(self, reset_token: str, new_password: str) -> None:
        if not reset_token:
            raise errors.bad_request(FieldViolation("reset_token", "must not be empty"))
        if violations := policy_violations("new_password", new_password):
            raise errors.bad_request(*violations)
        user_id = await self._store.use_reset(digest(reset_token))
        user = await self._store.get_user(user_id) if user_id else None
        if user is None:
            raise errors.invalid_reset_token()
        if violations := policy_violations("new_password", new_password, user.email):
            raise errors.bad_request(*violations)
        updated = replace(
            user,
            password_hash=await hash_password(new_password),
            update_time=_now(),
            version=user.version + 1,
        )
        if not await self._store.update_user(updated, user.version):
            raise errors.etag_mismatch(f"users/{user.user_id}")
        await self._end_all_sessions(user.user_id)
        _log.info("password reset", user_id=user.user_id)

    # API keys ------------------------------------------------------------------------

    async def create_api_key(
        self,
        user_id: str,
        display_name: str,
        scopes: list[str],
        expire_time: datetime | None,
        request_id: str,
    ) -> tuple[ApiKey, str]:
        violations: list[FieldViolation] = []
        if not 1 <= len(display_name.strip()) <= 100:
            violations.append(FieldViolation("api_key.display_name", "must be 1 to 100 characters"))
        if not scopes:
            violations.append(FieldViolation("api_key.scopes", "must name at least one scope"))
        for index, scope in enumerate(scopes):
            if scope not in API_KEY_SCOPES:
                allowed = ", ".join(sorted(API_KEY_SCOPES))
                violations.append(FieldViolation(f"api_key.scopes[{index}]", f"must be one of {allowed}"))
        now = _now()
        if expire_time is not None and expire_time <= now:
            violations.append(FieldViolation("api_key.expire_time", "must be in the future"))
        if request_id:
            try:
                uuid.UUID(request_id)
            except ValueError:
                violations.append(FieldViolation("request_id", "must be a UUID"))
        if violations:
            raise errors.bad_request(*violations)
        key_id = str(uuid.uuid4())
        if request_id:
            claimed = await self._store.claim_api_key_request(user_id, request_id, key_id)
            if claimed != key_id:
                existing = await self._store.get_api_key(user_id, claimed)
                if existing is None:
                    raise errors.not_found("api key", f"users/{user_id}/apiKeys/{claimed}")
                return existing, ""  # a retry: the secret was shown once, to the first call
        secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
        api_key = ApiKey(
            user_id=user_id,
            key_id=key_id,
            display_name=display_name.strip(),
            scopes=frozenset(scopes),
            key_prefix=secret[:10],
            create_time=now,
            expire_time=expire_time,
        )
        await self._store.insert_api_key(api_key, digest(secret))
        return api_key, secret

    async def list_api_keys(self, user_id: str, show_revoked: bool, size: int, token: str) -> Page:
        now = _now()
        keys = [k for k in await self._store.list_api_keys(user_id) if show_revoked or k.active(now)]
        keys.sort(key=lambda k: (k.create_time, k.key_id), reverse=True)
        items, next_token = offset_page(keys, size, token)
        return Page(list(items), next_token)

    async def revoke_api_key(self, user_id: str, key_id: str) -> ApiKey:
        key = await self._store.get_api_key(user_id, key_id)
        if key is None:
            raise errors.not_found("api key", f"users/{user_id}/apiKeys/{key_id}")
        if key.revoke_time is None:
            now = _now()
            await self._store.revoke_api_key(user_id, key_id, now)
            key = replace(key, revoke_time=now)
        return key

    # Administration ------------------------------------------------------------------

    async def list_users(self, after_email: str, email_prefix: str, size: int) -> tuple[list[User], str]:
        """Users in email order after after_email; returns them and the last email seen."""
        entries = await self._store.list_directory(after_email, normalise_email(email_prefix), size + 1)
        users: list[User] = []
        for _email, user_id in entries[:size]:
            user = await self._store.get_user(user_id)
            if user is not None:
                users.append(user)
        last = entries[size - 1][0] if len(entries) > size else ""
        return users, last

    async def update_user(
        self, admin: Principal, user_id: str, changes: dict[str, object], etag: str
    ) -> User:
        user = await self.get_user(user_id)
        if etag and etag != user.etag:
            raise errors.etag_mismatch(f"users/{user_id}")
        if user_id == admin.user_id and (changes.get("role") == "user" or changes.get("disabled") is True):
            raise permission_denied("admins cannot demote or disable themselves", "SELF_LOCKOUT")
        updated = replace(user, update_time=_now(), version=user.version + 1)
        if "role" in changes:
            updated = replace(updated, role=str(changes["role"]))
        if "tier" in changes:
            updated = replace(updated, tier=str(changes["tier"]))
        if "disabled" in changes:
            updated = replace(updated, disabled=bool(changes["disabled"]))
        if not await self._store.update_user(updated, user.version):
            raise errors.etag_mismatch(f"users/{user_id}")
        if updated.disabled and not user.disabled:
            await self._revocations.disable_user(user_id)
            await self._end_all_sessions(user_id)
        elif user.disabled and not updated.disabled:
            await self._revocations.enable_user(user_id)
        return updated

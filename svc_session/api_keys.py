"""API keys for partners: created by a verified account, shown once, stored as digests,
scoped (never `account`), exchanged for short-lived access tokens, revocable at once."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import replace
from datetime import datetime

from parley_core.auth import USER_SCOPES
from parley_core.errors import FieldViolation
from parley_core.paging import offset_page
from svc_session import errors
from svc_session.model import ApiKey, Credentials, Page, User, digest, now
from svc_session.ratelimit import AuthAttemptLimits
from svc_session.sessions import Sessions
from svc_session.store import ApiKeyStore, UserStore

#: Scopes an API key may carry: everything but account management.
API_KEY_SCOPES = USER_SCOPES - {"account"}
API_KEY_PREFIX = "pk_"


class ApiKeys:
    def __init__(
        self, users: UserStore, store: ApiKeyStore, sessions: Sessions, limits: AuthAttemptLimits
    ) -> None:
        self._users = users
        self._store = store
        self._sessions = sessions
        self._limits = limits

    async def create(
        self,
        user: User,
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
        moment = now()
        if expire_time is not None and expire_time <= moment:
            violations.append(FieldViolation("api_key.expire_time", "must be in the future"))
        if request_id:
            try:
                uuid.UUID(request_id)
            except ValueError:
                violations.append(FieldViolation("request_id", "must be a UUID"))
        if violations:
            raise errors.bad_request(*violations)
        if not user.email_verified:
            raise errors.email_not_verified("API keys")
        key_id = str(uuid.uuid4())
        if request_id:
            claimed = await self._store.claim_request(user.user_id, request_id, key_id)
            if claimed != key_id:
                existing = await self._store.get(user.user_id, claimed)
                if existing is None:
                    raise errors.not_found("api key", f"users/{user.user_id}/apiKeys/{claimed}")
                return existing, ""  # a retry: the secret was shown once, to the first call
        secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
        api_key = ApiKey(
            user_id=user.user_id,
            key_id=key_id,
            display_name=display_name.strip(),
            scopes=frozenset(scopes),
            key_prefix=secret[:10],
            create_time=moment,
            expire_time=expire_time,
        )
        await self._store.insert(api_key, digest(secret))
        return api_key, secret

    async def login(self, key: str, client_address: str) -> tuple[User, Credentials]:
        if not key.startswith(API_KEY_PREFIX):
            raise errors.invalid_api_key()
        await self._limits.check_auth_attempt(client_address, "")
        api_key = await self._store.by_hash(digest(key))
        moment = now()
        user = await self._users.get(api_key.user_id) if api_key else None
        if (
            api_key is None
            or user is None
            or not api_key.active(moment)
            or user.disabled
            or not user.email_verified
            or user.started_before_cutoff(api_key.create_time)
        ):
            raise errors.invalid_api_key()
        token, expires = await self._sessions.access_token(
            user, scopes=api_key.scopes, api_key_id=api_key.key_id
        )
        return user, Credentials(access_token=token, access_expire_time=expires, user_id=user.user_id)

    async def list(self, user_id: str, show_revoked: bool, size: int, token: str) -> Page:
        moment = now()
        keys = [k for k in await self._store.list(user_id) if show_revoked or k.active(moment)]
        keys.sort(key=lambda k: (k.create_time, k.key_id), reverse=True)
        items, next_token = offset_page(keys, size, token)
        return Page(list(items), next_token)

    async def revoke(self, user_id: str, key_id: str) -> ApiKey:
        key = await self._store.get(user_id, key_id)
        if key is None:
            raise errors.not_found("api key", f"users/{user_id}/apiKeys/{key_id}")
        if key.revoke_time is None:
            moment = now()
            await self._store.revoke(user_id, key_id, moment)
            key = replace(key, revoke_time=moment)
        # Repeated on every call, so a revoke whose Redis write failed can be retried.
        await self._sessions.revoke_tokens_of_key(key_id)
        return key

    async def revoke_all(self, user_id: str) -> int:
        """Revoke every active key of a user (a password reset); returns how many."""
        moment = now()
        revoked = 0
        for key in await self._store.list(user_id):
            if key.revoke_time is None:
                await self._store.revoke(user_id, key.key_id, moment)
                await self._sessions.revoke_tokens_of_key(key.key_id)
                revoked += 1
        return revoked

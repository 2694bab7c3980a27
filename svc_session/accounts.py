"""Accounts: registration, password sign-in, and the admin's view of users.

A new account is unverified until its owner opens the link mailed to the address
(svc_session.email_proofs). Until then it holds only the default role and no API keys,
and it is written with a TTL: unverified for `unverified_account_days`, it is deleted and
its email is free again. Admins are made out of band (`grant_admin`, behind the
`parley admin grant EMAIL` command), never by registering a listed address.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace

import structlog

from parley_core.auth import Principal, permission_denied
from parley_core.errors import FieldViolation, RpcError
from svc_session import errors
from svc_session.email_proofs import EmailProofs, email_violations, normalise_email, unverified_ttl_s
from svc_session.model import Credentials, User, now
from svc_session.passwords import hash_password, policy_violations, verify_password
from svc_session.ratelimit import AuthAttemptLimits
from svc_session.sessions import Sessions
from svc_session.settings import SessionSettings
from svc_session.store import UserStore

_log = structlog.get_logger("svc_session")


class Accounts:
    def __init__(
        self,
        settings: SessionSettings,
        users: UserStore,
        sessions: Sessions,
        proofs: EmailProofs,
        limits: AuthAttemptLimits,
    ) -> None:
        self._settings = settings
        self._users = users
        self._sessions = sessions
        self._proofs = proofs
        self._limits = limits

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
        moment = now()
        user = User(
            user_id=str(uuid.uuid4()),
            email=email,
            display_name=display_name,
            password_hash=await hash_password(password),
            role="user",
            tier=self._settings.default_tier,
            disabled=False,
            create_time=moment,
            update_time=moment,
            version=1,
            email_verified=False,
        )
        ttl_s = unverified_ttl_s(self._settings, user)
        # The row is written first under a fresh id nobody knows, then the email is claimed
        # with a lightweight transaction: exactly one of many concurrent registrations wins,
        # and a loser removes its unreachable row. All three expire unless verified.
        await self._users.insert(user, ttl_s)
        if not await self._users.claim_email(email, user.user_id, ttl_s):
            await self._users.delete(user.user_id)
            raise errors.email_taken()
        await self._users.add_to_directory(email, user.user_id, ttl_s)
        await self._proofs.request_verification(user)
        _log.info("user registered", user_id=user.user_id)
        return user, await self._sessions.start(user, user_agent, client_address)

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
        user_id = await self._users.id_by_email(email)
        user = await self._users.get(user_id) if user_id else None
        matched = await verify_password(user.password_hash if user else None, password)
        if user is None or not matched or user.disabled:
            raise errors.invalid_credentials()
        return user, await self._sessions.start(user, user_agent, client_address)

    async def get_user(self, user_id: str) -> User:
        user = await self._users.get(user_id)
        if user is None:
            raise errors.not_found("user", f"users/{user_id}")
        return user

    async def resend_verification(self, user_id: str) -> None:
        await self._proofs.request_verification(await self.get_user(user_id))

    async def end_all_sessions(self, user_id: str) -> None:
        """End every session and token of the user issued before now."""
        await self._change(user_id, self._sessions.cut_off)

    # Administration ------------------------------------------------------------------

    async def list_users(self, after_email: str, email_prefix: str, size: int) -> tuple[list[User], str]:
        """Users in email order after after_email; returns them and the last email seen."""
        entries = await self._users.list_directory(after_email, normalise_email(email_prefix), size + 1)
        users: list[User] = []
        for _email, user_id in entries[:size]:
            user = await self._users.get(user_id)
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
        updated = user
        if "role" in changes:
            updated = replace(updated, role=str(changes["role"]))
        if "tier" in changes:
            updated = replace(updated, tier=str(changes["tier"]))
        if "disabled" in changes:
            updated = replace(updated, disabled=bool(changes["disabled"]))
            if updated.disabled and not user.disabled:
                # Enabling the account again must not bring back what it had.
                updated = self._sessions.cut_off(updated)
        return await self._store_change(user, updated)

    async def grant_admin(self, email: str) -> User:
        """Make the account with this email an admin (the out-of-band bootstrap)."""
        user_id = await self._users.id_by_email(normalise_email(email))
        if user_id is None:
            raise errors.not_found("user with email", normalise_email(email))
        return await self._change(user_id, lambda user: replace(user, role="admin"))

    async def _change(self, user_id: str, change: Callable[[User], User]) -> User:
        """Apply change with optimistic concurrency, retrying when another write won."""
        for _attempt in range(5):
            user = await self.get_user(user_id)
            try:
                return await self._store_change(user, change(user))
            except RpcError as error:
                if error.reason != "ETAG_MISMATCH":
                    raise
        raise errors.etag_mismatch(f"users/{user_id}")

    async def _store_change(self, user: User, updated: User) -> User:
        """Write updated over user (the version it was read at), then tell every service."""
        if updated.role != "user" and not updated.email_verified:
            raise errors.email_not_verified("roles beyond user")
        updated = replace(updated, update_time=now(), version=user.version + 1)
        if not await self._users.update(
            updated, user.version, ttl_s=unverified_ttl_s(self._settings, updated)
        ):
            raise errors.etag_mismatch(f"users/{user.user_id}")
        # The role, tier and disabled flag apply to the user's next call everywhere.
        await self._sessions.publish(updated)
        if updated.disabled and not user.disabled:
            _log.info("user disabled", user_id=user.user_id)
        return updated

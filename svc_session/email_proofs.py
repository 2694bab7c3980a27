"""Proving an email address: the verification link and the password reset.

Both travel as mail through the outbox. A request only writes an *intent* (which mail, to
which address), the same work whether or not an account has the address, so neither the
answer nor its timing says which addresses have accounts. The relay (svc_session.mailbox)
turns intents into mail: it looks the account up, mints a single-use token, stores its
digest with the token's lifetime and sends the only copy of the token in the mail.

A password reset proves the address as a verification does, and more: it ends everything
the account had (sessions, access tokens, API keys), so whoever registered the address
before its owner keeps nothing.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, replace
from datetime import timedelta

import structlog

from parley_core.errors import FieldViolation
from svc_session import errors
from svc_session.api_keys import ApiKeys
from svc_session.model import User, digest, now
from svc_session.passwords import hash_password, policy_violations
from svc_session.ratelimit import AuthAttemptLimits
from svc_session.sessions import Sessions
from svc_session.settings import SessionSettings
from svc_session.store import MailIntent, Proof, ProofStore, UserStore

_log = structlog.get_logger("svc_session")

VERIFY_EMAIL = "verify_email"
PASSWORD_RESET = "password_reset"  # noqa: S105 - a kind of mail, not a secret


def normalise_email(email: str) -> str:
    return email.strip().lower()


def email_violations(field: str, email: str) -> list[FieldViolation]:
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or len(email) > 254 or any(c.isspace() for c in email):
        return [FieldViolation(field, "must be an email address such as ada@example.com")]
    return []


@dataclass(frozen=True)
class Mail:
    """A mail to send: the relay hands it to the transport."""

    recipient: str
    subject: str
    body: str


class EmailProofs:
    def __init__(
        self,
        settings: SessionSettings,
        users: UserStore,
        store: ProofStore,
        sessions: Sessions,
        api_keys: ApiKeys,
        limits: AuthAttemptLimits,
    ) -> None:
        self._settings = settings
        self._users = users
        self._store = store
        self._sessions = sessions
        self._api_keys = api_keys
        self._limits = limits
        #: Set whenever an intent is queued; the relay waits on it.
        self.queued = asyncio.Event()

    # Requests: intents only ---------------------------------------------------------

    async def request_verification(self, user: User) -> None:
        """Queue a verification mail for the account (at sign-up, or asked again)."""
        if user.email_verified:
            return
        await self._store.enqueue(
            VERIFY_EMAIL, user.email, user.user_id, self._settings.email_verification_ttl_s
        )
        self.queued.set()

    async def request_password_reset(self, email: str, client_address: str) -> None:
        email = normalise_email(email)
        if violations := email_violations("email", email):
            raise errors.bad_request(*violations)
        await self._limits.check_auth_attempt(client_address, email)
        await self._store.enqueue(PASSWORD_RESET, email, "", self._settings.password_reset_ttl_s)
        self.queued.set()

    # Using a proof ------------------------------------------------------------------

    async def verify_email(self, token: str) -> User:
        if not token:
            raise errors.bad_request(FieldViolation("verification_token", "must not be empty"))
        proof = await self._store.use_proof(
            digest(token), VERIFY_EMAIL, self._settings.email_verification_ttl_s
        )
        user = await self._users.get(proof.user_id) if proof else None
        if proof is None or user is None or user.email != proof.email:
            raise errors.invalid_verification_token()
        if user.email_verified:
            return user
        verified = await self._prove(user, replace(user, email_verified=True))
        _log.info("email verified", user_id=user.user_id)
        return verified

    async def reset_password(self, token: str, new_password: str) -> None:
        if not token:
            raise errors.bad_request(FieldViolation("reset_token", "must not be empty"))
        if violations := policy_violations("new_password", new_password):
            raise errors.bad_request(*violations)
        proof = await self._store.use_proof(
            digest(token), PASSWORD_RESET, self._settings.password_reset_ttl_s
        )
        user = await self._users.get(proof.user_id) if proof else None
        if proof is None or user is None or user.email != proof.email:
            raise errors.invalid_reset_token()
        if violations := policy_violations("new_password", new_password, user.email):
            raise errors.bad_request(*violations)
        changed = self._sessions.cut_off(
            replace(user, password_hash=await hash_password(new_password), email_verified=True)
        )
        await self._prove(user, changed)
        revoked = await self._api_keys.revoke_all(user.user_id)
        _log.info("password reset", user_id=user.user_id, api_keys_revoked=revoked)

    async def _prove(self, user: User, changed: User) -> User:
        """Store a change that proves the address: the account and its email stop expiring,
        then every service learns the new state."""
        updated = replace(changed, update_time=now(), version=user.version + 1)
        if not await self._users.update(updated, user.version, ttl_s=0):
            raise errors.etag_mismatch(f"users/{user.user_id}")
        await self._users.keep_email(updated.email, updated.user_id)
        await self._users.add_to_directory(updated.email, updated.user_id)
        await self._sessions.publish(updated)
        return updated

    # The relay's side ---------------------------------------------------------------

    async def compose(self, intent: MailIntent) -> Mail | None:
        """The mail an intent becomes, with a fresh token; None when there is nothing to send
        (no such account, disabled, already verified)."""
        if intent.kind == VERIFY_EMAIL:
            user = await self._users.get(intent.user_id)
            if user is None or user.email_verified or user.email != intent.recipient or user.disabled:
                return None
            token = await self._mint(VERIFY_EMAIL, user, self._settings.email_verification_ttl_s)
            hours = self._settings.email_verification_ttl_s // 3600
            return Mail(
                user.email,
                "Confirm your Parley email address",
                f"Open this link to confirm that this address is yours:\n\n"
                f"{self._settings.public_url}/verify-email?token={token}\n\n"
                f"Verification token: {token}\n\nIt works once, within {hours} hours. "
                f"If you did not sign up for Parley, ignore this mail: the account is deleted "
                f"after {self._settings.unverified_account_days} days.\n",
            )
        if intent.kind == PASSWORD_RESET:
            user_id = await self._users.id_by_email(intent.recipient)
            user = await self._users.get(user_id) if user_id else None
            if user is None or user.disabled:
                return None
            token = await self._mint(PASSWORD_RESET, user, self._settings.password_reset_ttl_s)
            minutes = self._settings.password_reset_ttl_s // 60
            return Mail(
                user.email,
                "Reset your Parley password",
                f"Someone asked to reset the password of this Parley account.\n\n"
                f"{self._settings.public_url}/reset-password?token={token}\n\n"
                f"Reset token: {token}\n\nIt works once, within {minutes} minutes. "
                f"If it was not you, ignore this mail.\n",
            )
        _log.warning("unknown mail intent dropped", kind=intent.kind)
        return None

    async def _mint(self, kind: str, user: User, ttl_s: int) -> str:
        token = secrets.token_urlsafe(32)
        await self._store.insert_proof(digest(token), Proof(kind, user.user_id, user.email, False), ttl_s)
        return token


def unverified_ttl_s(settings: SessionSettings, user: User) -> int:
    """Seconds an unverified account has left (0 for a verified one: it never expires)."""
    if user.email_verified:
        return 0
    deadline = user.create_time + timedelta(days=settings.unverified_account_days)
    return max(1, int((deadline - now()).total_seconds()))

"""Password policy and Argon2id hashing.

Policy (documented in RegisterRequest.password): 12 to 256 characters, not only
whitespace, and not the email itself. Length beats composition rules (NIST SP 800-63B).
Hashing runs in a worker thread: Argon2id is deliberately slow and would stall the loop.
"""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from parley_core.errors import FieldViolation

MIN_LENGTH = 12
MAX_LENGTH = 256

#: RFC 9106's second recommended setting (64 MiB, 3 passes), lowered to 19 MiB / 2 passes
#: as OWASP suggests for interactive logins on small servers.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

#: A hash to verify against when there is no hash to check (an unknown email, an account
#: without a password), so the timing does not tell. Its password is random per process
#: and known to nobody, and a match against it never signs anyone in.
_DECOY = _hasher.hash(secrets.token_urlsafe(32))


def policy_violations(field: str, password: str, email: str = "") -> list[FieldViolation]:
    """What is wrong with a new password; empty when it is acceptable."""
    if len(password) < MIN_LENGTH:
        return [FieldViolation(field, f"must be at least {MIN_LENGTH} characters")]
    if len(password) > MAX_LENGTH:
        return [FieldViolation(field, f"must be at most {MAX_LENGTH} characters")]
    if not password.strip():
        return [FieldViolation(field, "must not be only whitespace")]
    if email and password.strip().lower() == email.lower():
        return [FieldViolation(field, "must not be the email address")]
    return []


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when password matches stored_hash; always does the same work.

    A missing or empty hash fails (after the decoy's work): no account is ever signed in
    without a hash of its own to match.
    """
    target = stored_hash or _DECOY
    try:
        matched = await asyncio.to_thread(_hasher.verify, target, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return bool(matched) and bool(stored_hash)

"""Share link passwords, hashed with Argon2id like account passwords (svc_session).

Hashing runs in a worker thread: Argon2id is deliberately slow and would stall the loop.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

#: The same cost as account passwords: RFC 9106's second setting lowered to 19 MiB and two
#: passes, as OWASP suggests for interactive checks on small servers.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(stored_hash: str, password: str) -> bool:
    """True when password matches stored_hash (never for an empty hash)."""
    if not stored_hash:
        return False
    try:
        return bool(await asyncio.to_thread(_hasher.verify, stored_hash, password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False

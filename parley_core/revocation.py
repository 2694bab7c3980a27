"""The revocation list: sessions ended and users disabled before their tokens expire.

svc_session writes it, every service reads it (one Redis round trip per call, both keys in
one MGET). An ended session's entry lives as long as an access token can; a disabled
user's entry lives until the user is enabled again.
"""

from __future__ import annotations

from redis.asyncio import Redis

from parley_core.auth import Principal

_SESSION = "parley:revoked:session:"
_USER = "parley:revoked:user:"


class RedisRevocationList:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def is_revoked(self, principal: Principal) -> bool:
        keys = [_USER + principal.user_id]
        if principal.session_id:
            keys.append(_SESSION + principal.session_id)
        values = await self._redis.mget(keys)
        return any(value is not None for value in values)

    async def revoke_session(self, session_id: str, ttl_s: int) -> None:
        await self._redis.set(_SESSION + session_id, b"1", ex=max(ttl_s, 1))

    async def disable_user(self, user_id: str) -> None:
        await self._redis.set(_USER + user_id, b"1")

    async def enable_user(self, user_id: str) -> None:
        await self._redis.delete(_USER + user_id)

"""Password guesses at share links, throttled like sign-in: token buckets in Redis
(parley_core.ratelimit, the same limiter svc_session's sign-in uses).

Two buckets per guess, taken all or nothing: one per link and client address (strict: a
guesser exhausts only their own), one per link (loose: a backstop against guessing from
many addresses). Every attempt at a protected link costs a token, right or wrong, as
sign-in does.
"""

from __future__ import annotations

import math

import redis.asyncio

from parley_core.ratelimit import BucketSize, TokenBucketLimiter, address_ident
from svc_history import errors


class GuessThrottle:
    def __init__(
        self,
        redis_client: redis.asyncio.Redis,
        per_address: BucketSize,
        per_link: BucketSize,
        prefix: str = "parley:history:share:",
    ) -> None:
        self._limiter = TokenBucketLimiter(redis_client, prefix)
        self._per_address = per_address
        self._per_link = per_link

    async def check(self, share_link_id: str, client_address: str) -> None:
        """Take one guess from the link's buckets; RESOURCE_EXHAUSTED with RetryInfo when out."""
        decisions = await self._limiter.take_all(
            [
                (f"{share_link_id}:{address_ident(client_address)}", self._per_address),
                (share_link_id, self._per_link),
            ]
        )
        if not all(decision.allowed for decision in decisions):
            wait = max(d.retry_after_s for d in decisions if not d.allowed)
            raise errors.too_many_guesses(math.ceil(wait) if math.isfinite(wait) else 60)

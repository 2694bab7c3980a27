"""Admission: may this user start a turn now? One Redis round trip, before anything is written.

Three token buckets (parley_core.ratelimit), taken all or nothing in one Lua call:
- the user's turns (sized by the user's tier),
- the tier's turns (every user of the tier together: the tier's share of the backends),
- the user's model tokens: a turn needs the bucket to hold at least one token; when the
  turn ends, what the model actually read and wrote is charged (`charge`), which may leave
  a debt that refuses the next turns until the refill has paid it.
A refused turn costs nothing and gets RESOURCE_EXHAUSTED with RetryInfo (the longest wait of
the buckets that refused).
"""

from __future__ import annotations

import math

import grpc

from parley_core.errors import RpcError
from parley_core.ratelimit import TokenBucketLimiter
from svc_router.settings import RouterSettings, TierLimits


class Admission:
    def __init__(self, limiter: TokenBucketLimiter, settings: RouterSettings) -> None:
        self._limiter = limiter
        self._tiers = settings.tiers

    def limits(self, tier: str) -> TierLimits:
        return self._tiers.get(tier) or self._tiers.get("free") or TierLimits()

    async def admit(self, user_id: str, tier: str) -> None:
        """Take one turn from the user's and the tier's buckets; RESOURCE_EXHAUSTED if short."""
        limits = self.limits(tier)
        buckets = [
            (f"turns:user:{user_id}", limits.turns),
            (f"turns:tier:{tier}", limits.tier_turns),
            (f"tokens:user:{user_id}", limits.tokens),
        ]
        decisions = await self._limiter.take_all(buckets)
        refused = [
            (name, decision)
            for (name, _size), decision in zip(buckets, decisions, strict=True)
            if not decision.allowed
        ]
        if not refused:
            return
        wait = max(decision.retry_after_s for _name, decision in refused)
        which = refused[0][0].split(":")[0]
        quota = "token quota" if which == "tokens" else "turn rate limit"
        raise RpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "TOKEN_QUOTA_EXCEEDED" if which == "tokens" else "TURN_RATE_LIMITED",
            f"the {quota} of tier {tier!r} is used up; retry later",
            metadata={"tier": tier, "limit": which},
            retry_after_s=wait if math.isfinite(wait) else 3600.0,
        )

    async def charge(self, user_id: str, tier: str, tokens: int) -> None:
        """Charge the tokens a finished turn used (less the one admission took)."""
        if tokens > 1:
            await self._limiter.charge(f"tokens:user:{user_id}", self.limits(tier).tokens, tokens - 1)

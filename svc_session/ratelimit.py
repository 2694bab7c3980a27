"""Request buckets in Redis: per user (sized by tier), per API key, and per client address and
email for the sign-in methods that attract guessing.

The buckets are parley_core.ratelimit's token buckets, one Lua script per request, atomic
across every replica of svc_session and across the two ways in: the servicer's own checks
and Envoy's rate limit service (svc_session.rls), which use the same keys and sizes.

Several buckets are taken all or nothing: a guesser locked out by the per-email bucket
therefore does not also drain their address's bucket (which other people behind the same
address share), and a refused request never costs anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
from redis.exceptions import RedisError

from parley_core.errors import RpcError
from parley_core.ratelimit import BucketSize, Decision, TokenBucketLimiter, address_ident
from svc_session.settings import SessionSettings

__all__ = [
    "AuthAttemptLimits",
    "Bucket",
    "Decision",
    "RateLimits",
    "TokenBucketLimiter",
    "address_ident",
    "bucket_key",
    "email_ident",
    "rate_limited",
]

#: Error domain of the rate limiter's statuses (svc_session's).
DOMAIN = "session.parley.dev"


class AuthAttemptLimits(Protocol):
    """The brute-force buckets of the sign-in methods (RateLimits implements it)."""

    async def check_auth_attempt(self, client_address: str, email: str) -> None: ...


@dataclass(frozen=True)
class Bucket:
    """One bucket a request counts against: its kind, Redis key and size."""

    #: "user", "apikey", "addr", "anon", "email_addr" or "email"; sent as ErrorInfo metadata
    #: `bucket`.
    kind: str
    key: str
    size: BucketSize
    #: For people reading limits: the kind, and the tier for user buckets ("user:pro").
    name: str


def bucket_key(kind: str, ident: str) -> str:
    """`rl:{kind}:{ident}`, the Redis key of a bucket (before the limiter's prefix)."""
    return f"rl:{kind}:{ident}"


def email_ident(email: str) -> str:
    """The sha256 of the normalised email: the key names no one, yet equal emails meet."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


class RateLimits:
    """Which buckets a request must pass, sized from SessionSettings, and the checks.

    The `check_*` methods raise RESOURCE_EXHAUSTED (reason RATE_LIMITED, metadata
    `bucket`, RetryInfo) on refusal and UNAVAILABLE when Redis cannot answer: a limiter
    that fails open would hand guessers a window whenever Redis is down.
    """

    def __init__(self, limiter: TokenBucketLimiter, settings: SessionSettings) -> None:
        if settings.default_tier not in settings.tiers:
            raise ValueError(f"default tier {settings.default_tier!r} has no bucket in tiers")
        self._limiter = limiter
        self._settings = settings

    def user_bucket(self, user_id: str, tier: str) -> Bucket:
        """A user's bucket, sized by their tier (the default tier's size for an unknown one)."""
        tier = tier if tier in self._settings.tiers else self._settings.default_tier
        size = self._settings.tiers[tier]
        return Bucket("user", bucket_key("user", _required("user_id", user_id)), size, f"user:{tier}")

    def api_key_bucket(self, key_id: str) -> Bucket:
        key = bucket_key("apikey", _required("key_id", key_id))
        return Bucket("apikey", key, self._settings.api_key_bucket, "apikey")

    def address_bucket(self, client_address: str) -> Bucket:
        ident = address_ident(_required("client_address", client_address))
        return Bucket("addr", bucket_key("addr", ident), self._settings.auth_address_bucket, "addr")

    def anonymous_address_bucket(self, client_address: str) -> Bucket:
        """The address's bucket for routine calls without a token (the edge spends it)."""
        ident = address_ident(_required("client_address", client_address))
        size = self._settings.anonymous_address_bucket
        return Bucket("anon", bucket_key("anon", ident), size, "anon")

    def email_bucket(self, email: str) -> Bucket:
        ident = email_ident(_required("email", email))
        return Bucket("email", bucket_key("email", ident), self._settings.auth_email_bucket, "email")

    def email_address_bucket(self, email: str, client_address: str) -> Bucket:
        """The strict bucket of one email tried from one address (an IPv6 /64)."""
        ident = (
            email_ident(_required("email", email)) + ":" + address_ident(_required("address", client_address))
        )
        size = self._settings.auth_email_address_bucket
        return Bucket("email_addr", bucket_key("emailaddr", ident), size, "email_addr")

    async def take(
        self, buckets: Sequence[Bucket], cost: int = 1, *, timeout_s: float | None = None
    ) -> list[Decision]:
        """One decision per bucket; tokens are taken only when every bucket allows.

        `timeout_s` is the caller's remaining time: past it the answer could not be used.
        """
        try:
            async with asyncio.timeout(timeout_s):
                return await self._limiter.take_all([(b.key, b.size) for b in buckets], cost)
        except RedisError as error:
            raise RpcError(
                grpc.StatusCode.UNAVAILABLE,
                "RATE_LIMITER_UNAVAILABLE",
                "the rate limiter cannot answer now",
                DOMAIN,
                retry_after_s=1.0,
            ) from error
        except TimeoutError as error:
            raise RpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", "no time left to check limits", DOMAIN
            ) from error

    async def check_user(self, user_id: str, tier: str) -> None:
        await self._check([self.user_bucket(user_id, tier)])

    async def check_api_key(self, key_id: str) -> None:
        await self._check([self.api_key_bucket(key_id)])

    async def check_auth_attempt(self, client_address: str, email: str) -> None:
        """Register, Login and RequestPasswordReset: the address's and the email's buckets.

        An email is counted twice: strictly per email and address, so guessing from one
        address stops soon without keeping the owner (elsewhere) out, and loosely per
        email alone, a backstop against guessing from many addresses. An empty email (an
        API key sign-in) counts against the address only. The buckets are taken together
        or not at all (see the module docstring).
        """
        buckets = []
        if client_address.strip():
            buckets.append(self.address_bucket(client_address))
        if email.strip():
            if client_address.strip():
                buckets.append(self.email_address_bucket(email, client_address))
            buckets.append(self.email_bucket(email))
        await self._check(buckets)

    async def _check(self, buckets: Sequence[Bucket]) -> None:
        decisions = await self.take(buckets)
        refused = [
            (d.retry_after_s, b.kind) for b, d in zip(buckets, decisions, strict=True) if not d.allowed
        ]
        if refused:
            # The caller waits for the slowest bucket in any case, so that is the one named.
            wait, kind = max(refused)
            raise rate_limited(kind, wait)


def rate_limited(kind: str, retry_after_s: float) -> RpcError:
    """RESOURCE_EXHAUSTED naming the bucket, with RetryInfo when a retry can succeed."""
    retry = None if math.isinf(retry_after_s) else retry_after_s
    return RpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        "too many requests; retry later" if retry is None else f"too many requests; retry in {retry:.1f} s",
        DOMAIN,
        metadata={"bucket": kind},
        retry_after_s=retry,
    )


def _required(field: str, value: str) -> str:
    if not value.strip():
        # A bucket for "" would be one bucket shared by every caller without an id.
        raise ValueError(f"{field} must not be empty")
    return value.strip()

"""Request buckets in Redis: per user (sized by tier), per API key, and per client address and
email for the sign-in methods that attract guessing.

Each bucket is a token bucket kept in one Redis hash (tokens left and when they were
counted) and changed by one Lua script, so a read, refill and take is atomic across every
replica of svc_session and across the two ways in: the servicer's own checks and Envoy's
rate limit service (svc_session.rls), which use the same keys and sizes. The script reads
the clock with Redis `TIME`, so replicas with skewed clocks still agree, and gives every
bucket a PEXPIRE of the time it needs to fill up again: an idle bucket is a full bucket,
and Redis forgets it.

Several buckets are taken all or nothing: when any of them is short, nothing is taken
from any of them. A guesser locked out by the per-email bucket therefore does not also
drain their address's bucket (which other people behind the same address share), and
a refused request never costs anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import redis.asyncio
from redis.exceptions import RedisError

from parley_core.errors import RpcError
from svc_session.settings import BucketSize, SessionSettings

#: Error domain of the rate limiter's statuses (svc_session's).
DOMAIN = "session.parley.dev"

#: IPv6 clients are counted per /64: one subscriber usually holds a whole /64, so a
#: per-address bucket would otherwise be one bucket per guess.
IPV6_PREFIX = 64

# KEYS: the buckets. ARGV[1]: the cost; then each bucket's capacity and refill per second.
# Returns, after 1 when every bucket had `cost` tokens (and they were taken) or 0 (nothing
# taken), four integers per bucket: 1 when that bucket had enough, the whole tokens left,
# milliseconds until it has `cost` tokens (0 when it had them, -1 when cost > capacity),
# milliseconds until it is full.
_TAKE = """
local cost = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local fresh, left, capacity, per_ms = {}, {}, {}, {}
local enough, every = {}, 1
for i, key in ipairs(KEYS) do
  if fresh[key] == nil then
    capacity[key] = tonumber(ARGV[2 * i])
    per_ms[key] = tonumber(ARGV[2 * i + 1]) / 1000
    local state = redis.call('HMGET', key, 'tokens', 'ms')
    local tokens = tonumber(state[1])
    if tokens == nil then
      tokens = capacity[key]
    else
      local idle = math.max(0, now - (tonumber(state[2]) or now))
      tokens = math.min(capacity[key], tokens + idle * per_ms[key])
    end
    fresh[key], left[key] = tokens, tokens
  end
  if left[key] >= cost then
    enough[i] = 1
    left[key] = left[key] - cost
  else
    enough[i] = 0
    every = 0
  end
end
local reply = {every}
for i, key in ipairs(KEYS) do
  local tokens = fresh[key]
  if every == 1 then tokens = left[key] end
  local retry = 0
  if enough[i] == 0 then
    if cost > capacity[key] then
      retry = -1
    else
      retry = math.ceil((cost - tokens) / per_ms[key])
    end
  end
  local full = math.ceil((capacity[key] - tokens) / per_ms[key])
  table.insert(reply, enough[i])
  table.insert(reply, math.floor(tokens))
  table.insert(reply, retry)
  table.insert(reply, full)
end
if every == 1 then
  for key, tokens in pairs(left) do
    redis.call('HSET', key, 'tokens', string.format('%.17g', tokens), 'ms', string.format('%d', now))
    redis.call('PEXPIRE', key, math.max(1, math.ceil((capacity[key] - tokens) / per_ms[key])))
  end
end
return reply
"""


class AuthAttemptLimits(Protocol):
    """The brute-force buckets of the sign-in methods (RateLimits implements it)."""

    async def check_auth_attempt(self, client_address: str, email: str) -> None: ...


@dataclass(frozen=True)
class Decision:
    """What one bucket said about one request."""

    #: The bucket had the tokens the request costs (they were taken only when every
    #: bucket of the request had them).
    allowed: bool
    #: Whole tokens left after the request.
    remaining: int
    #: Seconds until the bucket holds what the request costs: 0 when it did, infinity
    #: when the cost is larger than the bucket.
    retry_after_s: float
    #: Seconds until the bucket is full again.
    reset_after_s: float


class TokenBucketLimiter:
    """Atomic token buckets in Redis, addressed by key (stored under `prefix` + key)."""

    def __init__(self, redis: redis.asyncio.Redis, prefix: str = "parley:") -> None:
        # register_script runs EVALSHA and loads the script only when Redis lacks it.
        self._script = redis.register_script(_TAKE)
        self._prefix = prefix

    async def take(self, key: str, size: BucketSize, cost: int = 1) -> Decision:
        """Take `cost` tokens from one bucket when it has them; a refusal takes nothing."""
        [decision] = await self.take_all([(key, size)], cost)
        return decision

    async def take_all(self, buckets: Sequence[tuple[str, BucketSize]], cost: int = 1) -> list[Decision]:
        """Take `cost` from every bucket when each has it, otherwise from none.

        A key listed twice pays twice. On Redis Cluster the keys must share a hash slot.
        """
        if cost < 1:
            raise ValueError(f"cost must be at least 1, not {cost}")
        if not buckets:
            return []
        args: list[str | int] = [cost]
        for _key, size in buckets:
            args += [size.capacity, repr(size.refill_per_s)]
        reply: Any = await self._script(keys=[self._prefix + key for key, _size in buckets], args=args)
        return [
            Decision(
                allowed=bool(reply[1 + 4 * i]),
                remaining=int(reply[2 + 4 * i]),
                retry_after_s=math.inf if reply[3 + 4 * i] < 0 else int(reply[3 + 4 * i]) / 1000,
                reset_after_s=int(reply[4 + 4 * i]) / 1000,
            )
            for i in range(len(buckets))
        ]


@dataclass(frozen=True)
class Bucket:
    """One bucket a request counts against: its kind, Redis key and size."""

    #: "user", "apikey", "addr", "email_addr" or "email"; sent as ErrorInfo metadata `bucket`.
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


def address_ident(address: str) -> str:
    """An IPv4 address as is, an IPv6 address as its /64; anything else lowercased."""
    text = address.strip()
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return text.lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


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

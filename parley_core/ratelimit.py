"""Token buckets in Redis, shared by every service that limits something.

Each bucket is kept in one Redis hash (tokens left and when they were counted) and changed
by one Lua script, so a read, refill and take is atomic across every replica. The script
reads the clock with Redis `TIME`, so replicas with skewed clocks still agree, and gives
every bucket a PEXPIRE of the time it needs to fill up again: an idle bucket is a full
bucket, and Redis forgets it.

Several buckets are taken all or nothing: when any of them is short, nothing is taken from
any of them, so a refused request never costs anything (docs/adr/0004).

svc_session builds its request and sign-in buckets on it (svc_session.ratelimit), svc_history
its share-link password buckets (svc_history.throttle).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio
from pydantic import BaseModel, Field

__all__ = ["IPV6_PREFIX", "BucketSize", "Decision", "TokenBucketLimiter", "address_ident"]

#: IPv6 clients are counted per /64: one subscriber usually holds a whole /64, so a
#: per-address bucket would otherwise be one bucket per guess.
IPV6_PREFIX = 64


class BucketSize(BaseModel):
    """A token bucket: `capacity` requests at once, refilled at `refill_per_s`."""

    capacity: int = Field(gt=0)
    refill_per_s: float = Field(gt=0)


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


# KEYS[1]: the bucket. ARGV: the cost, the capacity, the refill per second. Takes the cost
# whatever is left, so the bucket may go below zero (a debt the refill pays off first);
# returns the whole tokens left (negative for a debt).
_CHARGE = """
local cost = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local per_ms = tonumber(ARGV[3]) / 1000
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ms')
local tokens = tonumber(state[1])
if tokens == nil then
  tokens = capacity
else
  local idle = math.max(0, now - (tonumber(state[2]) or now))
  tokens = math.min(capacity, tokens + idle * per_ms)
end
tokens = tokens - cost
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ms', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((capacity - tokens) / per_ms)))
return math.floor(tokens)
"""


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
        self._charge = redis.register_script(_CHARGE)
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

    async def charge(self, key: str, size: BucketSize, cost: int) -> int:
        """Take cost from a bucket even when it lacks it, leaving a debt; the tokens left.

        For costs known only afterwards (the tokens a model used): the request was admitted
        on what the bucket held, and the next one waits until the refill has paid the debt.
        """
        if cost < 0:
            raise ValueError(f"cost must not be negative, not {cost}")
        reply: Any = await self._charge(
            keys=[self._prefix + key], args=[cost, size.capacity, repr(size.refill_per_s)]
        )
        return int(reply)


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

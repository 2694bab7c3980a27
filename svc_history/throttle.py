"""Password guesses at share links, throttled like sign-in: token buckets in Redis.

Two buckets per guess, taken all or nothing by one Lua script (atomic across replicas,
Redis's clock): one per link and client address (strict: a guesser exhausts only their
own), one per link (loose: a backstop against guessing from many addresses). Every
attempt at a protected link costs a token, right or wrong, as sign-in does. An idle bucket
expires when it would be full again.

The same script as svc_session's rate limiter (svc_session/ratelimit.py), reduced to what
history needs; services do not import each other (docs/adr/0008-history.md proposes moving
the limiter into parley_core).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import Sequence

import redis.asyncio

from svc_history import errors
from svc_history.settings import BucketSize

# KEYS: the buckets. ARGV: per bucket its capacity and refill per second. Returns 0 when
# each bucket had a token (and one was taken from each), else the milliseconds until every
# bucket has one (nothing taken).
_TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local tokens, capacity, per_ms = {}, {}, {}
local wait = 0
for i, key in ipairs(KEYS) do
  capacity[i] = tonumber(ARGV[2 * i - 1])
  per_ms[i] = tonumber(ARGV[2 * i]) / 1000
  local state = redis.call('HMGET', key, 'tokens', 'ms')
  local left = tonumber(state[1])
  if left == nil then
    left = capacity[i]
  else
    left = math.min(capacity[i], left + math.max(0, now - (tonumber(state[2]) or now)) * per_ms[i])
  end
  tokens[i] = left
  if left < 1 then
    wait = math.max(wait, math.ceil((1 - left) / per_ms[i]))
  end
end
if wait > 0 then
  return wait
end
for i, key in ipairs(KEYS) do
  local left = tokens[i] - 1
  redis.call('HSET', key, 'tokens', string.format('%.17g', left), 'ms', string.format('%d', now))
  redis.call('PEXPIRE', key, math.max(1, math.ceil((capacity[i] - left) / per_ms[i])))
end
return 0
"""

#: IPv6 clients are counted per /64 (one subscriber usually holds a whole /64).
_IPV6_PREFIX = 64


def _address_key(address: str) -> str:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return hashlib.sha256(address.encode()).hexdigest()[:16]
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/{_IPV6_PREFIX}", strict=False).network_address)
    return str(parsed)


class GuessThrottle:
    def __init__(
        self,
        redis_client: redis.asyncio.Redis,
        per_address: BucketSize,
        per_link: BucketSize,
        prefix: str = "parley:history:share:",
    ) -> None:
        self._script = redis_client.register_script(_TAKE)
        self._per_address = per_address
        self._per_link = per_link
        self._prefix = prefix

    async def check(self, share_link_id: str, client_address: str) -> None:
        """Take one guess from the link's buckets; RESOURCE_EXHAUSTED with RetryInfo when out."""
        buckets: Sequence[tuple[str, BucketSize]] = (
            (f"{self._prefix}{share_link_id}:{_address_key(client_address)}", self._per_address),
            (f"{self._prefix}{share_link_id}", self._per_link),
        )
        argv: list[float] = []
        for _, size in buckets:
            argv += [size.capacity, size.refill_per_s]
        wait_ms = int(await self._script(keys=[key for key, _ in buckets], args=argv))
        if wait_ms > 0:
            raise errors.too_many_guesses(math.ceil(wait_ms / 1000))

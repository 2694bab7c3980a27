"""Monthly budgets in Redis: what svc_router reserves at admission and svc_ledger settles.

The state of a budget in one month is one Redis hash: `spent` (the priced line items of the
month, as the ledger last knew them) and `reserved` (the largest possible cost of the turns
still running), plus one field per running turn's reservation and a sorted set of those
turns by expiry. The limits of a budget are a second hash, the same every month.

- `reserve` (svc_router, one Lua call at admission): for each budget of the turn that has a
  limit, refuse when spent + reserved + the turn's largest cost would pass the hard limit;
  otherwise hold that amount on every such budget and say which soft limits it could pass.
  Reservations that were never settled (a router died, the event was lost) expire.
- `settle` (svc_ledger, one Lua call per batch of priced events): release the turns'
  reservations and set each budget's `spent` from the ledger's totals, in the same call, so
  a turn's cost is always counted once: reserved before, spent after. Totals are per user
  and carry the version of the ledger row they come from, so a stale or repeated settle
  never moves `spent` backwards or counts anything twice.
- `ready`: the ledger writes the marker once it has rebuilt the state from its own tables.
  A Redis that lost its data has no marker, and `reserve` then refuses with
  BudgetStateUnavailable until the ledger has rebuilt it: no turn is admitted against a
  budget that would read as unspent.

Every key carries the hash tag `{parley-budget}`, so in a Redis Cluster the whole state is
on one shard and the scripts may touch the keys a reservation names (docs/adr/0013).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import redis.asyncio

__all__ = [
    "BudgetLimits",
    "BudgetScope",
    "BudgetState",
    "BudgetStateUnavailableError",
    "Contribution",
    "Refusal",
    "Reservation",
    "Standing",
    "Warning",
    "month_of",
]

_TAG = "{parley-budget}"
#: How long a month's state outlives the month (then Redis forgets it).
MONTH_TTL_S = 62 * 24 * 3600

ScopeKind = Literal["user", "api_key", "tier"]

_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
_NAMES = (
    ("api_key", re.compile(rf"^users/(?P<user>{_ID})/apiKeys/(?P<key>{_ID})/budget$")),
    ("user", re.compile(rf"^users/(?P<user>{_ID})/budget$")),
    ("tier", re.compile(r"^tiers/(?P<tier>[a-z][a-z0-9_-]{0,62})/budget$")),
)


def month_of(when: datetime) -> str:
    """The calendar month (UTC) of `when`: "2026-11"."""
    return when.astimezone(UTC).strftime("%Y-%m")


@dataclass(frozen=True, order=True)
class BudgetScope:
    """What a budget limits: one user, one API key (of a user), or a whole tier."""

    kind: ScopeKind
    #: The user id, "{user}/{api_key}" or the tier.
    id: str

    @classmethod
    def user(cls, user_id: str) -> BudgetScope:
        return cls("user", user_id)

    @classmethod
    def api_key(cls, user_id: str, key_id: str) -> BudgetScope:
        return cls("api_key", f"{user_id}/{key_id}")

    @classmethod
    def tier(cls, tier: str) -> BudgetScope:
        return cls("tier", tier)

    @classmethod
    def parse(cls, name: str) -> BudgetScope | None:
        """The scope of a budget's resource name; None when the name is not one."""
        for kind, pattern in _NAMES:
            match = pattern.match(name)
            if match:
                groups = match.groupdict()
                if kind == "api_key":
                    return cls.api_key(groups["user"], groups["key"])
                return cls("user", groups["user"]) if kind == "user" else cls("tier", groups["tier"])
        return None

    @classmethod
    def from_key(cls, key: str) -> BudgetScope:
        """The scope whose `key` this is."""
        kind, _, ident = key.partition(":")
        if kind not in ("user", "api_key", "tier") or not ident:
            raise ValueError(f"not a budget scope key: {key!r}")
        return cls(kind, ident)  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        """The budget's resource name."""
        if self.kind == "user":
            return f"users/{self.id}/budget"
        if self.kind == "api_key":
            user, key = self.id.split("/", 1)
            return f"users/{user}/apiKeys/{key}/budget"
        return f"tiers/{self.id}/budget"

    @property
    def owner(self) -> str:
        """The user the budget belongs to; empty for a tier's."""
        return self.id.split("/", 1)[0] if self.kind != "tier" else ""

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True)
class BudgetLimits:
    """A budget's limits in micro-units; None for no limit."""

    soft: int | None = None
    hard: int | None = None


@dataclass(frozen=True)
class Warning:
    """A soft limit the turn could take its budget past."""

    scope: BudgetScope
    soft_limit: int
    #: Spent and reserved, this turn included.
    committed: int


@dataclass(frozen=True)
class Refusal:
    """The hard limit that refused the turn."""

    scope: BudgetScope
    hard_limit: int
    #: Spent and reserved before this turn.
    committed: int


@dataclass(frozen=True)
class Reservation:
    """What `reserve` decided: a refusal, or the warnings of an admitted turn."""

    refusal: Refusal | None = None
    warnings: tuple[Warning, ...] = ()


@dataclass(frozen=True)
class Contribution:
    """A user's share of one budget's month, from the ledger row at `version`."""

    scope: BudgetScope
    month: str
    user_id: str
    version: int
    spent: int


@dataclass(frozen=True)
class Standing:
    """A budget's month as Redis holds it."""

    limits: BudgetLimits
    spent: int
    reserved: int


class BudgetStateUnavailableError(RuntimeError):
    """Redis holds no budget state (it lost it); the ledger is rebuilding it."""


# KEYS[1]: the ready marker; KEYS[2]: the turn's reservation; then per budget its limits,
# its month and its month's reservations by expiry. ARGV: turn, amount, hold ms, month ttl s.
# Returns {0} when the state is missing; {2, i, hard, committed} when budget i refuses;
# {1, i, soft, committed, ...} with the soft limits it could pass when admitted.
_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {1} end
local turn, amount = ARGV[1], tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local expires = now + tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local held, reply = {}, {1}
for i = 0, (#KEYS - 2) / 3 - 1 do
  local limits_key, month_key, by_expiry = KEYS[3 + 3 * i], KEYS[4 + 3 * i], KEYS[5 + 3 * i]
  local limits = redis.call('HMGET', limits_key, 'soft', 'hard')
  local soft, hard = tonumber(limits[1]), tonumber(limits[2])
  if soft or hard then
    for _, old in ipairs(redis.call('ZRANGEBYSCORE', by_expiry, '-inf', now)) do
      local left = tonumber(redis.call('HGET', month_key, 'r:' .. old) or '0')
      redis.call('HDEL', month_key, 'r:' .. old)
      redis.call('HINCRBY', month_key, 'reserved', -left)
      redis.call('ZREM', by_expiry, old)
    end
    local state = redis.call('HMGET', month_key, 'spent', 'reserved')
    local before = tonumber(state[1] or '0') + tonumber(state[2] or '0')
    if hard and before + amount > hard then return {2, i, hard, before} end
    if soft and before + amount > soft then
      table.insert(reply, i); table.insert(reply, soft); table.insert(reply, before + amount)
    end
    table.insert(held, month_key); table.insert(held, by_expiry)
  end
end
if #held == 0 then return reply end
for j = 1, #held, 2 do
  redis.call('HINCRBY', held[j], 'reserved', amount)
  redis.call('HSET', held[j], 'r:' .. turn, amount)
  redis.call('ZADD', held[j + 1], expires, turn)
  redis.call('EXPIRE', held[j], ttl)
  redis.call('EXPIRE', held[j + 1], ttl)
end
redis.call('HSET', KEYS[2], 'amount', amount, 'keys', table.concat(held, ' '))
redis.call('PEXPIREAT', KEYS[2], expires)
return reply
"""

# Release the reservations of ARGV[1..n] (n = ARGV[1]); then, for each group of five
# ARGV (month key, user, version, spent, ttl), set that user's share of the month's spent
# when the version is newer than the one it holds. KEYS: the reservation keys.
_SETTLE = """
for _, reservation in ipairs(KEYS) do
  local amount = tonumber(redis.call('HGET', reservation, 'amount') or '0')
  local keys = redis.call('HGET', reservation, 'keys')
  local turn = string.match(reservation, ':turn:(.*)$')
  if keys then
    local parts = {}
    for key in string.gmatch(keys, '%S+') do table.insert(parts, key) end
    for j = 1, #parts, 2 do
      if redis.call('HDEL', parts[j], 'r:' .. turn) == 1 then
        redis.call('HINCRBY', parts[j], 'reserved', -amount)
      end
      redis.call('ZREM', parts[j + 1], turn)
    end
  end
  redis.call('DEL', reservation)
end
for j = 1, #ARGV, 5 do
  local month_key, user, version, spent = ARGV[j], ARGV[j + 1], tonumber(ARGV[j + 2]), tonumber(ARGV[j + 3])
  local known = tonumber(redis.call('HGET', month_key, 'v:' .. user) or '-1')
  if version > known then
    local before = tonumber(redis.call('HGET', month_key, 's:' .. user) or '0')
    redis.call('HSET', month_key, 'v:' .. user, version, 's:' .. user, spent)
    redis.call('HINCRBY', month_key, 'spent', spent - before)
    redis.call('EXPIRE', month_key, tonumber(ARGV[j + 4]))
  end
end
return 1
"""

# Drop the month's expired reservations, then return spent and reserved. KEYS: month, expiry.
_STANDING = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  local left = tonumber(redis.call('HGET', KEYS[1], 'r:' .. old) or '0')
  redis.call('HDEL', KEYS[1], 'r:' .. old)
  redis.call('HINCRBY', KEYS[1], 'reserved', -left)
  redis.call('ZREM', KEYS[2], old)
end
local state = redis.call('HMGET', KEYS[1], 'spent', 'reserved')
return {tonumber(state[1] or '0'), tonumber(state[2] or '0')}
"""


class BudgetState:
    """The budgets' Redis state; svc_router reserves and releases, svc_ledger settles."""

    def __init__(self, redis_client: redis.asyncio.Redis) -> None:
        self._redis = redis_client
        self._reserve = redis_client.register_script(_RESERVE)
        self._settle = redis_client.register_script(_SETTLE)
        self._standing = redis_client.register_script(_STANDING)

    # -- keys ---------------------------------------------------------------------------

    @staticmethod
    def ready_key() -> str:
        return f"parley:budget:{_TAG}:ready"

    @staticmethod
    def reservation_key(turn_id: str) -> str:
        return f"parley:budget:{_TAG}:turn:{turn_id}"

    @staticmethod
    def limits_key(scope: BudgetScope) -> str:
        return f"parley:budget:{_TAG}:limits:{scope.key}"

    @staticmethod
    def month_key(scope: BudgetScope, month: str) -> str:
        return f"parley:budget:{_TAG}:{month}:{scope.key}"

    @staticmethod
    def expiry_key(scope: BudgetScope, month: str) -> str:
        return f"parley:budget:{_TAG}:{month}:{scope.key}:expiry"

    # -- svc_router -----------------------------------------------------------------------

    async def reserve(
        self, turn_id: str, amount: int, scopes: Sequence[BudgetScope], *, month: str, hold_s: float
    ) -> Reservation:
        """Hold `amount` micro-units for the turn on each budget of `scopes` that has a limit,
        or refuse; idempotent per turn (a second call holds nothing more)."""
        keys = [self.ready_key(), self.reservation_key(turn_id)]
        for scope in scopes:
            keys += [self.limits_key(scope), self.month_key(scope, month), self.expiry_key(scope, month)]
        reply: list[Any] = await self._reserve(
            keys=keys, args=[turn_id, amount, int(hold_s * 1000), MONTH_TTL_S]
        )
        if reply[0] == 0:
            raise BudgetStateUnavailableError("the budget state is being rebuilt")
        if reply[0] == 2:
            return Reservation(refusal=Refusal(scopes[int(reply[1])], int(reply[2]), int(reply[3])))
        values = [int(v) for v in reply[1:]]
        return Reservation(
            warnings=tuple(
                Warning(scopes[values[j]], values[j + 1], values[j + 2]) for j in range(0, len(values), 3)
            )
        )

    async def release(self, turn_ids: Sequence[str]) -> None:
        """Give back what the turns reserved (a turn that ended without a usage event)."""
        await self.settle(turn_ids, ())

    # -- svc_ledger -----------------------------------------------------------------------

    async def settle(self, turn_ids: Sequence[str], contributions: Sequence[Contribution]) -> None:
        """Release the turns' reservations and set the users' shares of spent, at once."""
        if not turn_ids and not contributions:
            return
        args: list[str | int] = []
        for c in contributions:
            args += [self.month_key(c.scope, c.month), c.user_id, c.version, c.spent, MONTH_TTL_S]
        await self._settle(keys=[self.reservation_key(t) for t in turn_ids], args=args)

    async def set_limits(self, scope: BudgetScope, limits: BudgetLimits) -> None:
        """Store the budget's limits; both None removes them."""
        key = self.limits_key(scope)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            for field, value in (("soft", limits.soft), ("hard", limits.hard)):
                if value is not None:
                    pipe.hset(key, field, value)
            await pipe.execute()

    async def standing(self, scope: BudgetScope, month: str) -> Standing:
        limits = await self._redis.hmget(self.limits_key(scope), ["soft", "hard"])
        spent, reserved = await self._standing(
            keys=[self.month_key(scope, month), self.expiry_key(scope, month)], args=[]
        )
        soft, hard = (int(v) if v is not None else None for v in limits)
        return Standing(BudgetLimits(soft, hard), int(spent), int(reserved))

    async def is_ready(self) -> bool:
        return bool(await self._redis.exists(self.ready_key()))

    async def mark_ready(self, note: str) -> None:
        await self._redis.set(self.ready_key(), note)

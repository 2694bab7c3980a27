"""Revocation state: what ends an access token before its `exp`, and what overrides its claims.

svc_session writes it (`revoke_session`, `revoke_api_key`, `publish_user`); every
service reads it on every call (`check`), mostly from a local view kept current by
following a Redis Stream, so the common case costs no network round trip.

Data model in Redis (`{p}` is the key prefix, "parley:auth:" by default):

- `{p}session:{session_id}` = "1", with a TTL of at least one access-token lifetime: the
  session has ended (logout, revoke); every token naming it in `sid` is refused
  (SESSION_REVOKED).
- `{p}apikey:{api_key_id}` = "1", with a TTL: the API key was revoked; every access token
  exchanged for it (claim `akid`) is refused (API_KEY_REVOKED).
- `{p}user:{user_id}`: a hash {role, tier, disabled ("0"/"1"), not_before_ms (decimal
  milliseconds since the epoch)} with no TTL, rewritten in full on every role, tier or
  disabled change, on "end all sessions" and on a password reset (not_before_ms = now).
  A disabled user is refused (ACCOUNT_DISABLED); a token issued before not_before_ms
  (claim `iat_ms`, else `iat` * 1000) is refused (TOKEN_REVOKED); otherwise the hash's
  role and tier replace the token's. No hash: the token's claims stand.
- `{p}log`: a Stream (XADD with MAXLEN ~ 10000); every write appends one entry
  {kind: "session" | "apikey" | "user", id: <the id>} in the same MULTI/EXEC as the
  write itself, so an entry never exists without its state.

The local view: per user the state (or "no hash"), per session and API key the revoked
flag, each in a bounded dict, filled by the first Redis lookup (one pipelined HGETALL +
MGET). A background follower (`start()` / `close()`) reads the stream with XREAD BLOCK from
the last id it saw and invalidates (users) or marks revoked (sessions, API keys) the
entries each stream entry names. A lookup whose Redis reply may predate an invalidation
that arrived meanwhile is used for its own call but not stored (a generation counter).

Freshness guarantee:

- Same instance: once a write method returns, this instance's next `check` sees it
  (the writer applies the change to its own view before returning).
- Another instance (another process): its `check` sees the change as soon as its follower
  has received the stream entry, which XREAD BLOCK delivers as soon as Redis has it
  (typically well under a few milliseconds on a LAN). Between the write returning and
  that delivery, the other instance may still answer from its old view: that window is
  the price of a check without a round trip.
- The window is bounded: the local view is trusted only while the follower has completed
  a successful read within `max_staleness_s` (default 3 s). Otherwise (Redis down, a
  stalled follower, `start()` not called) every `check` reads Redis directly, and if that
  fails too the check fails closed: UNAVAILABLE, reason AUTH_BACKEND_UNAVAILABLE, with
  RetryInfo and a message that names no host or port. So a write is seen everywhere within
  `max_staleness_s` at the very worst, and within one stream delivery normally.
- When the follower regains Redis after a failure, or after its view went stale, it drops
  the whole local view (stream entries may have been trimmed meanwhile) and starts again
  from the stream's current end.

Every Redis call runs under `asyncio.timeout` (`op_timeout_s`; a blocking read gets
`block_s` on top). The Redis client must have a connection pool (the follower's blocking
read holds one connection), which `redis.asyncio.Redis` has by default. A blocking read
waits at most `block_s`, or half the client's `socket_timeout` when that is shorter, so
the client's own read timeout never cuts it off.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.typing import EncodableT, FieldT

from parley_core.auth._errors import backend_unavailable, unauthenticated
from parley_core.auth._principal import Principal
from parley_core.errors import RpcError

_log = structlog.get_logger("parley.auth")

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")

#: The follower's pause after a failed read doubles from the first to the last.
_BACKOFF_S = (0.05, 1.0)
#: A failing Redis is logged at most this often by `check` (the follower logs each outage).
_WARN_EVERY_S = 10.0
_STREAM_BATCH = 1000


@dataclass(frozen=True)
class UserState:
    """What svc_session publishes about a user; see the module docstring for its effect."""

    role: str
    tier: str
    disabled: bool
    #: Tokens issued before this time (milliseconds since the epoch) are refused.
    not_before_ms: int


class _Bounded(dict[_K, _V], Generic[_K, _V]):
    """A dict that forgets its oldest entry when full (insertion order)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def put(self, key: _K, value: _V) -> None:
        if key not in self and len(self) >= self.capacity:
            del self[next(iter(self))]
        self[key] = value


class _Unknown:
    """Not in the local view."""


_UNKNOWN = _Unknown()


class Revocations:
    """Writer and reader of the revocation state, with a local view (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "parley:auth:",
        op_timeout_s: float = 1.0,
        max_staleness_s: float = 3.0,
        block_s: float = 1.0,
        cache_size: int = 100_000,
        log_maxlen: int = 10_000,
    ) -> None:
        socket_timeout = redis.connection_pool.connection_kwargs.get("socket_timeout")
        if isinstance(socket_timeout, (int, float)) and 0 < socket_timeout <= block_s * 1.25:
            # A blocking read must return before the client's own read timeout ends it.
            block_s = socket_timeout / 2
        if not 0 < block_s < max_staleness_s:
            raise ValueError("block_s must be positive and shorter than max_staleness_s")
        self._redis = redis
        self._prefix = prefix
        self._log_key = f"{prefix}log"
        self._op_timeout_s = op_timeout_s
        self._max_staleness_s = max_staleness_s
        self._block_s = block_s
        self._log_maxlen = log_maxlen
        self._users: _Bounded[str, UserState | None] = _Bounded(cache_size)
        self._sessions: _Bounded[str, bool] = _Bounded(cache_size)
        self._api_keys: _Bounded[str, bool] = _Bounded(cache_size)
        #: Bumped whenever the view loses or changes entries; a lookup that started under an
        #: older generation does not store its answer.
        self._generation = 0
        #: time.monotonic() of the follower's last successful read; -inf: never, or failing.
        self._current_at = -math.inf
        self._last_id: bytes | str | None = None
        self._task: asyncio.Task[None] | None = None
        #: Bumped by close(): a follower loop runs while the number it started with is current.
        self._run = 0
        self._warned_at = -math.inf

    # -- the follower ---------------------------------------------------------------------

    @property
    def is_current(self) -> bool:
        """Whether `check` answers from the local view now (the follower read recently)."""
        return time.monotonic() - self._current_at < self._max_staleness_s

    async def start(self) -> None:
        """Start following the stream. Does not raise when Redis is down: the follower keeps
        trying, and meanwhile every `check` goes to Redis (and fails closed)."""
        if self._task is not None:
            return
        try:
            await self._reset()
        except Exception as error:
            self._last_id = None
            _log.warning("revocation follower cannot reach redis; retrying", error=type(error).__name__)
        self._task = asyncio.create_task(self._follow(), name="parley-revocations-follower")

    async def close(self) -> None:
        """Stop following; later checks read Redis directly. The Redis client stays open."""
        task, self._task = self._task, None
        self._current_at = -math.inf
        self._last_id = None
        if task is None:
            return
        self._run += 1
        task.cancel()
        # The loop also ends by itself once its read returns: on Python 3.11 a cancellation
        # can be lost inside redis-py (its asyncio.wait_for around a send).
        done, _ = await asyncio.wait({task}, timeout=self._block_s + self._op_timeout_s + 1)
        if not done:
            task.cancel()
            _log.warning("revocation follower did not stop in time")

    async def _reset(self) -> None:
        """Start over from the stream's end with an empty view.

        The end is read before the view is dropped: whatever was written up to it is in
        Redis, where the next lookups read it; whatever comes after it, the follower sees.
        """
        async with asyncio.timeout(self._op_timeout_s):
            tail = await self._redis.xrevrange(self._log_key, count=1)
        self._last_id = tail[0][0] if tail else "0-0"
        self._drop_view()
        self._current_at = time.monotonic()

    def _drop_view(self) -> None:
        self._users.clear()
        self._sessions.clear()
        self._api_keys.clear()
        self._generation += 1

    async def _follow(self) -> None:
        backoff, failing, run = _BACKOFF_S[0], False, self._run
        while run == self._run:
            try:
                if self._last_id is None:
                    await self._reset()
                last_id: bytes | str = self._last_id if self._last_id is not None else "0-0"
                async with asyncio.timeout(self._block_s + self._op_timeout_s):
                    reply = await self._redis.xread(
                        {self._log_key: last_id},
                        block=int(self._block_s * 1000),
                        count=_STREAM_BATCH,
                    )
                if run != self._run:
                    return
                now = time.monotonic()
                if now - self._current_at >= self._max_staleness_s:
                    # The view went stale while this read waited (a stalled loop, a slow
                    # Redis); entries may have been trimmed unseen.
                    self._drop_view()
                self._apply(reply)
                self._current_at = now
                if failing:
                    _log.info("revocation follower reconnected")
                backoff, failing = _BACKOFF_S[0], False
            except Exception as error:
                if run != self._run:  # closed meanwhile: the state is no longer this loop's
                    return
                self._current_at = -math.inf
                self._last_id = None  # reconnect: drop the view, start from the end
                if not failing:
                    _log.warning("revocation follower lost redis; checks read redis directly",
                                 error=type(error).__name__)  # fmt: skip
                failing = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_S[1])

    def _apply(self, reply: Any) -> None:
        streams = reply.values() if isinstance(reply, dict) else [entries for _name, entries in reply or ()]
        changed = False
        for entries in streams:
            for entry_id, fields in entries:
                self._last_id = entry_id
                changed = True
                kind, ident = (
                    _text(fields.get(b"kind", fields.get("kind"))),
                    _text(fields.get(b"id", fields.get("id"))),
                )
                if kind == "user":
                    self._users.pop(ident, None)
                elif kind == "session":
                    if ident in self._sessions:
                        self._sessions[ident] = True
                elif kind == "apikey":
                    if ident in self._api_keys:
                        self._api_keys[ident] = True
                else:  # written by a newer version: forget everything rather than guess
                    self._users.clear()
                    self._sessions.clear()
                    self._api_keys.clear()
        if changed:
            self._generation += 1

    # -- writing --------------------------------------------------------------------------

    async def revoke_session(self, session_id: str, ttl_s: int) -> None:
        """End a session: every token naming it is refused. ttl_s: at least a token lifetime."""
        if not session_id:
            raise ValueError("session_id is empty")
        key = f"{self._prefix}session:{session_id}"
        await self._write("session", session_id, lambda p: p.set(key, "1", ex=max(ttl_s, 1)))
        if session_id in self._sessions:
            self._sessions[session_id] = True

    async def revoke_api_key(self, api_key_id: str, ttl_s: int) -> None:
        """Revoke an API key: every access token issued from it is refused."""
        if not api_key_id:
            raise ValueError("api_key_id is empty")
        key = f"{self._prefix}apikey:{api_key_id}"
        await self._write("apikey", api_key_id, lambda p: p.set(key, "1", ex=max(ttl_s, 1)))
        if api_key_id in self._api_keys:
            self._api_keys[api_key_id] = True

    async def publish_user(self, user_id: str, state: UserState) -> None:
        """Replace a user's state (role, tier, disabled, not_before_ms)."""
        mapping: dict[FieldT, EncodableT] = {
            "role": state.role,
            "tier": state.tier,
            "disabled": "1" if state.disabled else "0",
            "not_before_ms": str(int(state.not_before_ms)),
        }
        await self._write("user", user_id, lambda p: p.hset(f"{self._prefix}user:{user_id}", mapping=mapping))
        self._users.pop(user_id, None)  # the next check reads what Redis now holds

    async def _write(self, kind: str, ident: str, stage: Callable[[Pipeline], object]) -> None:
        try:
            async with asyncio.timeout(self._op_timeout_s), self._redis.pipeline(transaction=True) as pipe:
                stage(pipe)
                pipe.xadd(
                    self._log_key,
                    {"kind": kind, "id": ident},
                    maxlen=self._log_maxlen,
                    approximate=True,
                )
                await pipe.execute()
        except Exception as error:
            raise self._unavailable("write", error) from None
        finally:
            # Also after a failure: the write may have happened. Lookups in flight must not
            # store what they read before it.
            self._generation += 1

    # -- reading --------------------------------------------------------------------------

    async def check(self, principal: Principal) -> Principal:
        """The principal as the revocation state has it now, or UNAUTHENTICATED.

        Raises UNAUTHENTICATED with reason SESSION_REVOKED, API_KEY_REVOKED, TOKEN_REVOKED
        or ACCOUNT_DISABLED; UNAVAILABLE (AUTH_BACKEND_UNAVAILABLE) when the state cannot be
        read. Returns the principal with the user state's role and tier, if there is one.
        """
        if time.monotonic() - self._current_at < self._max_staleness_s:
            user = self._users.get(principal.user_id, _UNKNOWN)
            session = self._sessions.get(principal.session_id, _UNKNOWN) if principal.session_id else False
            api_key = self._api_keys.get(principal.api_key_id, _UNKNOWN) if principal.api_key_id else False
            if not (
                isinstance(user, _Unknown) or isinstance(session, _Unknown) or isinstance(api_key, _Unknown)
            ):
                return _judge(principal, user, session, api_key)
        return await self._check_in_redis(principal)

    async def _check_in_redis(self, principal: Principal) -> Principal:
        generation, storable = self._generation, self.is_current
        flags = []
        if principal.session_id:
            flags.append(f"{self._prefix}session:{principal.session_id}")
        if principal.api_key_id:
            flags.append(f"{self._prefix}apikey:{principal.api_key_id}")
        try:
            async with asyncio.timeout(self._op_timeout_s), self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(f"{self._prefix}user:{principal.user_id}")
                if flags:
                    pipe.mget(flags)
                replies = await pipe.execute()
            user = _user_state(replies[0])
        except Exception as error:
            raise self._unavailable("read", error) from None
        revoked = [value is not None for value in (replies[1] if flags else ())]
        session = revoked.pop(0) if principal.session_id else False
        api_key = revoked.pop(0) if principal.api_key_id else False
        if storable and generation == self._generation:
            self._users.put(principal.user_id, user)
            if principal.session_id:
                self._sessions.put(principal.session_id, session)
            if principal.api_key_id:
                self._api_keys.put(principal.api_key_id, api_key)
        return _judge(principal, user, session, api_key)

    def _unavailable(self, operation: str, error: BaseException) -> RpcError:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            _log.warning("revocation state unavailable", operation=operation, error=type(error).__name__)
        return backend_unavailable("revocation state")


def _judge(principal: Principal, user: UserState | None, session: bool, api_key: bool) -> Principal:
    if user is not None and user.disabled:
        raise unauthenticated("the account is disabled", "ACCOUNT_DISABLED")
    if session:
        raise unauthenticated("the session has ended; sign in again", "SESSION_REVOKED")
    if api_key:
        raise unauthenticated("the API key this token was issued for is revoked", "API_KEY_REVOKED")
    if user is None:
        return principal
    if principal.issued_at_ms < user.not_before_ms:
        raise unauthenticated("the token was issued before its sessions were ended; sign in again",
                              "TOKEN_REVOKED")  # fmt: skip
    if principal.role != user.role or principal.tier != user.tier:
        return replace(principal, role=user.role, tier=user.tier)
    return principal


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _user_state(fields: dict[Any, Any]) -> UserState | None:
    """The state in a user hash; None for no hash. A malformed hash raises (fail closed)."""
    if not fields:
        return None
    text = {_text(k): _text(v) for k, v in fields.items()}
    disabled = text["disabled"]
    if disabled not in ("0", "1"):
        raise ValueError("disabled must be 0 or 1")
    return UserState(text["role"], text["tier"], disabled == "1", int(text["not_before_ms"]))

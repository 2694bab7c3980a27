"""The turn log: every event of a turn in a Redis Stream, so any router can replay and follow it.

Layout (docs/adr/0011-chat-turn.md), all keys under `parley:turn:{turn id}:` with a TTL:
- `log`: a stream whose entry ids are `0-{sequence}`. XADD with an explicit id only
  succeeds above the last one, so two routers can never both write a sequence number:
  whoever closes a turn whose router died races the router (if it still lives) on one
  atomic append, and exactly one of them wins.
- `record`: the TurnRecord (JSON), what a router that did not start the turn needs.
- `lease`: the id of the router instance running the turn, renewed while it runs. A turn
  without a final event whose lease is gone has lost its router.
- `cancel`: set by CancelTurn; the running router also hears it on the `parley:turn-cancels`
  channel.
- `watched`: refreshed by streams that follow the turn from another router, so the router
  running it knows someone still reads.
Idempotency keys map to turns under `parley:turn-key:{user}:{sha256(key)}`, and
`parley:turns-of:{user}` lists a user's turns, so erasing the user finds them all.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

import redis.asyncio
from redis.exceptions import ResponseError

from svc_router.turns import BudgetWarning, Completed, Delta, Started, TurnEvent, TurnName, TurnRecord

#: Where CancelTurn announces cancels to every router.
CANCEL_CHANNEL = "parley:turn-cancels"


def _key(turn_id: str, part: str) -> str:
    return f"parley:turn:{turn_id}:{part}"


def _turns_of(user_id: str) -> str:
    """The set of a user's turns that may still have a log (for erasure)."""
    return f"parley:turns-of:{user_id}"


def encode_event(event: TurnEvent) -> str:
    kind = event.kind
    body: dict[str, Any] = {"s": event.sequence, "t": event.time_ms}
    if isinstance(kind, Started):
        body["started"] = asdict(kind)
    elif isinstance(kind, Delta):
        body["delta"] = [kind.text, kind.tokens]
    else:
        body["completed"] = asdict(kind)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def decode_event(text: str | bytes) -> TurnEvent:
    body = json.loads(text)
    kind: Started | Delta | Completed
    if "started" in body:
        started = body["started"]
        kind = Started(**{**started, "budget_warnings": _warnings(started)})
    elif "delta" in body:
        kind = Delta(text=body["delta"][0], tokens=body["delta"][1])
    else:
        kind = Completed(**body["completed"])
    return TurnEvent(sequence=body["s"], time_ms=body["t"], kind=kind)


def _warnings(body: dict[str, Any]) -> tuple[BudgetWarning, ...]:
    """The budget warnings of a decoded Started or TurnRecord (JSON has lists of objects)."""
    return tuple(BudgetWarning(**warning) for warning in body.get("budget_warnings", ()))


def _encode_record(record: TurnRecord) -> str:
    body = asdict(record)
    body["name"] = [record.name.user_id, record.name.conversation_id, record.name.turn_id]
    return json.dumps(body, separators=(",", ":"))


def _decode_record(text: str | bytes) -> TurnRecord:
    body = json.loads(text)
    body["name"] = TurnName(*body["name"])
    body["budget_warnings"] = _warnings(body)
    return TurnRecord(**body)


class SequenceTakenError(Exception):
    """Another writer already logged this sequence number (or a later one)."""


class TurnLog:
    """The Redis side of turns: events, records, leases, cancels and idempotency keys."""

    def __init__(self, redis: redis.asyncio.Redis, *, ttl_s: int, max_events: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._max_events = max_events

    # Idempotency ------------------------------------------------------------------------

    @staticmethod
    def _idempotency_key(user_id: str, key: str) -> str:
        return f"parley:turn-key:{user_id}:{hashlib.sha256(key.encode()).hexdigest()}"

    async def turn_of_key(self, user_id: str, key: str) -> str | None:
        """The turn id a user's idempotency key already started, if any."""
        found = await self._redis.get(self._idempotency_key(user_id, key))
        return found.decode() if isinstance(found, bytes) else found

    async def claim_key(self, user_id: str, key: str, turn_id: str, ttl_s: int) -> str:
        """Make key name turn_id unless it names a turn already; the turn id it names."""
        name = self._idempotency_key(user_id, key)
        if await self._redis.set(name, turn_id, nx=True, ex=ttl_s):
            return turn_id
        found = await self._redis.get(name)
        return found.decode() if isinstance(found, bytes) else str(found)

    async def keep_key(self, user_id: str, key: str, ttl_s: int) -> None:
        """Keep key naming its turn for ttl_s (once the turn is stored)."""
        await self._redis.expire(self._idempotency_key(user_id, key), ttl_s)

    async def release_key(self, user_id: str, key: str, turn_id: str) -> None:
        """Forget key when it still names turn_id (the turn failed before it was stored)."""
        name = self._idempotency_key(user_id, key)
        found = await self._redis.get(name)
        if found is not None and (found.decode() if isinstance(found, bytes) else found) == turn_id:
            await self._redis.delete(name)

    # Records and leases -----------------------------------------------------------------

    async def open(self, record: TurnRecord, owner: str, lease_s: float) -> None:
        """Store a new turn's record and take its lease."""
        turn_id = record.name.turn_id
        turns_of_user = _turns_of(record.name.user_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(_key(turn_id, "record"), _encode_record(record), ex=self._ttl_s)
            pipe.set(_key(turn_id, "lease"), owner, px=int(lease_s * 1000))
            pipe.sadd(turns_of_user, turn_id)
            pipe.expire(turns_of_user, self._ttl_s)
            await pipe.execute()

    async def save_record(self, record: TurnRecord) -> None:
        await self._redis.set(_key(record.name.turn_id, "record"), _encode_record(record), ex=self._ttl_s)

    async def record(self, turn_id: str) -> TurnRecord | None:
        found = await self._redis.get(_key(turn_id, "record"))
        return None if found is None else _decode_record(found)

    async def renew_lease(self, turn_id: str, owner: str, lease_s: float) -> None:
        await self._redis.set(_key(turn_id, "lease"), owner, px=int(lease_s * 1000))

    async def lease_holder(self, turn_id: str) -> str | None:
        found = await self._redis.get(_key(turn_id, "lease"))
        return found.decode() if isinstance(found, bytes) else found

    async def release_lease(self, turn_id: str) -> None:
        await self._redis.delete(_key(turn_id, "lease"))

    # Events -----------------------------------------------------------------------------

    async def append(self, turn_id: str, *events: TurnEvent) -> None:
        """Log events (in sequence order); SequenceTakenError when one was already logged."""
        [failure] = await self.append_many([(turn_id, list(events))])
        if failure is not None:
            raise failure

    async def append_many(self, batches: list[tuple[str, list[TurnEvent]]]) -> list[Exception | None]:
        """Log several turns' events in one round trip; for each turn, None or what failed
        (SequenceTakenError when one of its sequence numbers was already logged)."""
        spans: list[tuple[int, int]] = []
        async with self._redis.pipeline(transaction=False) as pipe:
            commands = 0
            for turn_id, events in batches:
                log = _key(turn_id, "log")
                first = commands
                for event in events:
                    pipe.xadd(
                        log,
                        {"e": encode_event(event)},
                        id=f"0-{event.sequence}",
                        maxlen=self._max_events,
                        approximate=True,
                    )
                    commands += 1
                # The log lives turn_log_ttl_s from its start and again from its end (a turn
                # is much shorter than that); a TTL on every write would double the writes.
                if events and (events[0].sequence == 1 or events[-1].final):
                    pipe.expire(log, self._ttl_s)
                    pipe.expire(_key(turn_id, "record"), self._ttl_s)
                    commands += 2
                spans.append((first, commands))
            replies = await pipe.execute(raise_on_error=False)
        failures: list[Exception | None] = []
        for (turn_id, _events), (start, end) in zip(batches, spans, strict=True):
            failure: Exception | None = None
            for reply in replies[start:end]:
                if isinstance(reply, ResponseError):
                    failure = SequenceTakenError(turn_id) if "equal or smaller" in str(reply) else reply
                    break
            failures.append(failure)
        return failures

    async def read(self, turn_id: str, after: int, count: int = 1000) -> list[TurnEvent]:
        """Logged events with a sequence above after, oldest first, at most count."""
        entries: Any = await self._redis.xrange(_key(turn_id, "log"), min=f"(0-{after}", max="+", count=count)
        return [decode_event(fields[b"e"]) for _id, fields in entries]

    async def wait(self, turn_id: str, after: int, block_ms: int) -> list[TurnEvent]:
        """Events above after, waiting up to block_ms for the first one."""
        reply: Any = await self._redis.xread({_key(turn_id, "log"): f"0-{after}"}, count=1000, block=block_ms)
        events: list[TurnEvent] = []
        for _stream, entries in reply or []:
            events += [decode_event(fields[b"e"]) for _id, fields in entries]
        return events

    async def last_sequence(self, turn_id: str) -> int:
        entries: Any = await self._redis.xrevrange(_key(turn_id, "log"), count=1)
        return int(entries[0][0].decode().split("-")[1]) if entries else 0

    async def exists(self, turn_id: str) -> bool:
        return bool(await self._redis.exists(_key(turn_id, "record")))

    # Cancels and watchers ---------------------------------------------------------------

    async def request_cancel(self, turn_id: str) -> None:
        await self._redis.set(_key(turn_id, "cancel"), "1", ex=self._ttl_s)
        await self._redis.publish(CANCEL_CHANNEL, turn_id)

    async def cancel_requested(self, turn_id: str) -> bool:
        return bool(await self._redis.exists(_key(turn_id, "cancel")))

    async def cancels(self) -> AsyncIterator[str]:
        """Turn ids as CancelTurn announces them, until the iterator is closed."""
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(CANCEL_CHANNEL)
        try:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message.get("type") == "message":
                    data = message["data"]
                    yield data.decode() if isinstance(data, bytes) else str(data)
                else:
                    await asyncio.sleep(0)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def mark_watched(self, turn_id: str, for_s: float) -> None:
        await self._redis.set(_key(turn_id, "watched"), "1", px=max(1, int(for_s * 1000)))

    async def watched(self, turn_id: str) -> bool:
        return bool(await self._redis.exists(_key(turn_id, "watched")))

    async def forget_user(self, user_id: str) -> int:
        """Delete every turn log, record and idempotency key of a user now (erasure); how
        many turns were forgotten. Safe to repeat."""
        members: Any = await self._redis.smembers(_turns_of(user_id))
        turn_ids = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        parts = ("log", "record", "lease", "cancel", "watched")
        keys = [_key(t, part) for t in turn_ids for part in parts]
        keys += [key async for key in self._redis.scan_iter(match=f"parley:turn-key:{user_id}:*", count=500)]
        keys.append(_turns_of(user_id))
        await self._redis.delete(*keys)
        return len(turn_ids)

"""The relay: publishes an outbox's pending events to Pulsar (see parley_core.outbox)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

import pulsar
import structlog
from cassandra.util import unix_time_from_uuid1
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from parley_core.events import TOPIC_PREFIX
from parley_core.outbox._store import Outbox, _Row

_log = structlog.get_logger("parley.outbox")


class PulsarClient(Protocol):
    """What the relay uses of `pulsar.Client` (a test may hand in a wrapper)."""

    def create_producer(self, topic: str, **options: Any) -> Any: ...

    def close(self) -> None: ...


class _RelayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.pending = Gauge(
            "parley_outbox_pending_events",
            "Events waiting in the outbox as this relay last read them (at most batch_size per "
            "shard); every relay of a keyspace reports the same outbox, so take the max.",
            registry=registry,
        )
        self.published = Counter(
            "parley_outbox_published_events",
            "Events this relay published and deleted from the outbox, by topic.",
            ["topic"],
            registry=registry,
        )
        self.publish_seconds = Histogram(
            "parley_outbox_publish_seconds",
            "Time from handing an event to the Pulsar producer to the broker's acknowledgement "
            "(or the producer's error).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.failures = Counter(
            "parley_outbox_failures",
            "Failed attempts: stage 'publish' (Pulsar) or 'store' (Cassandra).",
            ["stage"],
            registry=registry,
        )


class _PublishError(Exception):
    """Pulsar did not take an event."""


class OutboxRelay:
    """Publishes an outbox's pending events to Pulsar, then deletes them.

    `pulsar_service` is a service URL (`pulsar://host:6650`) or a factory of clients; after
    a failed round the relay closes its client and makes a new one. `start()` runs it in the
    background: every `poll_s` over all shards (other instances' events), at once for
    shards this process added to (`Outbox.add` on the same `Outbox` wakes it, as does
    `kick`). A send that the broker has not acknowledged within `send_timeout_s` (also the
    client's operation timeout) has failed. When Pulsar or Cassandra fails the relay logs
    one warning, backs off (up to `max_backoff_s`) and keeps the events; it logs again
    (info) when it publishes again. Call its methods from the event loop's thread.
    """

    def __init__(
        self,
        outbox: Outbox,
        pulsar_service: str | Callable[[], PulsarClient],
        *,
        topic_prefix: str = TOPIC_PREFIX,
        poll_s: float = 1.0,
        batch_size: int = 100,
        lease_s: int = 30,
        send_timeout_s: float = 10.0,
        max_backoff_s: float = 30.0,
        reorder_window_s: float = 5.0,
        full_scan_s: float = 300.0,
        registry: CollectorRegistry | None = None,
        owner: str | None = None,
    ) -> None:
        self._outbox = outbox
        self._make_client = (
            _client_factory(pulsar_service, send_timeout_s)
            if isinstance(pulsar_service, str)
            else pulsar_service
        )
        self._topic_prefix = topic_prefix
        self._poll_s = poll_s
        self._batch = batch_size
        self._lease_s = max(int(lease_s), 2)
        self._send_timeout_s = send_timeout_s
        self._max_backoff_s = max_backoff_s
        self._reorder_window_s = reorder_window_s
        self._full_scan_s = full_scan_s
        self._metrics = _RelayMetrics(registry if registry is not None else CollectorRegistry())
        self.owner = f"{owner or f'{socket.gethostname()}:{os.getpid()}'}/{uuid.uuid4().hex[:8]}"

        self._client: PulsarClient | None = None
        self._producers: dict[str, Any] = {}
        self._producer_locks: dict[str, asyncio.Lock] = {}
        self._leases: dict[int, float] = {}  # shard -> monotonic time our lease ends
        self._others: dict[int, float] = {}  # shard -> monotonic time another's lease may end
        self._cursors: dict[int, float] = {}  # shard -> unix time to read from
        self._seen: dict[int, int] = {}  # shard -> pending rows at the last read
        self._round_lock = asyncio.Lock()
        self._round_errors: list[tuple[str, BaseException]] = []
        self._broken_topics: dict[str, BaseException] = {}

        self._wake = asyncio.Event()
        self._kicked: set[int] = set()
        self._last_full = float("-inf")
        self._last_scan_from_start = float("-inf")
        self._failing_since: float | None = None
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self._task: asyncio.Task[None] | None = None

    # Life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Run in the background until `stop()`."""
        if self._task is None:
            self._outbox._listeners.add(self.kick)
            self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Stop, give the shards' leases back and close the Pulsar client."""
        self._outbox._listeners.discard(self.kick)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        async with self._round_lock:
            # All leases at once, under one bound: a slow Cassandra costs stop 5 s, not 5 s a
            # shard (a lease not given back simply runs out after lease_s).
            releases = [self._release(shard) for shard in list(self._leases)]
            if releases:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.gather(*releases, return_exceptions=True), 5)
            closing = self._drop_client()
            if closing is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(closing), self._send_timeout_s)

    def kick(self, shard: int | None = None) -> None:
        """Look now (at one shard, or at all of them), not at the next poll."""
        if shard is None:
            self._last_full = float("-inf")
        else:
            self._kicked.add(shard)
        self._wake.set()

    async def publish_pending(self) -> int:
        """One round over every shard; returns how many events were published.

        Never raises for Pulsar or Cassandra failures: they are logged, counted and retried.
        """
        return await self._round(range(self._outbox.shards), full=True)

    # The loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            backed_off = self._retry_at > now
            if backed_off:  # kicks wait too
                await asyncio.sleep(self._retry_at - now)
            else:
                wait = self._poll_s - (now - self._last_full)
                if wait > 0 and not self._wake.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            kicked, self._kicked = self._kicked, set()
            full = backed_off or time.monotonic() - self._last_full >= self._poll_s
            try:
                await self._round(range(self._outbox.shards) if full else sorted(kicked), full=full)
            except Exception as error:  # a bug; the relay must go on regardless
                _log.error("outbox relay round failed", exc_info=error)
                self._retry_at = time.monotonic() + self._max_backoff_s

    async def _round(self, shards: Iterable[int], *, full: bool) -> int:
        async with self._round_lock:
            now = time.monotonic()
            if full:
                self._last_full = now
                if now - self._last_scan_from_start >= self._full_scan_s:
                    self._cursors.clear()  # stragglers behind a cursor are found here
                    self._last_scan_from_start = now
            self._round_errors = []
            self._broken_topics = {}
            results = await asyncio.gather(*(self._shard(s) for s in shards), return_exceptions=True)
            published = 0
            for result in results:
                if isinstance(result, asyncio.CancelledError):
                    raise result
                if isinstance(result, BaseException):
                    self._metrics.failures.labels("store").inc()
                    self._round_errors.append(("store", result))
                else:
                    published += result
            pending = sum(self._seen.values())
            self._metrics.pending.set(pending)
            if self._round_errors:
                self._failed(published)
            elif published or (full and not pending):
                self._succeeded(published)  # evidence that the way to Pulsar works again
            return published

    def _failed(self, published: int) -> None:
        stage, error = self._round_errors[0]
        if any(failed_stage == "publish" for failed_stage, _ in self._round_errors):
            self._drop_client()  # the next round starts from a fresh client
        now = time.monotonic()
        self._backoff_s = min(self._max_backoff_s, max(0.5, self._backoff_s * 2))
        self._retry_at = now + self._backoff_s * (0.75 + random.random() / 2)  # noqa: S311 - jitter
        if self._failing_since is None:
            self._failing_since = now
            _log.warning(
                "outbox relay cannot publish; events stay in the outbox and are retried",
                stage=stage,
                error=_describe(error),
                pending=sum(self._seen.values()),
                published=published,
            )
        else:
            _log.debug("outbox relay still failing", stage=stage, error=_describe(error))

    def _succeeded(self, published: int) -> None:
        if self._failing_since is not None:
            _log.info(
                "outbox relay publishing again",
                outage_s=round(time.monotonic() - self._failing_since, 1),
                published=published,
            )
        self._failing_since = None
        self._backoff_s = 0.0
        self._retry_at = 0.0

    # One shard -----------------------------------------------------------------------------

    async def _shard(self, shard: int) -> int:
        rows = await self._read(shard)
        if not rows:
            if shard in self._leases:
                await self._release(shard)
            return 0
        if self._others.get(shard, 0.0) > time.monotonic():
            return 0  # another relay is on it
        had_lease = self._lease_left(shard) > 0
        if not await self._hold(shard):
            return 0
        if not had_lease:
            rows = await self._read(shard)  # the previous holder may have published some
        published = 0
        while rows:
            count, complete = await self._publish(shard, rows)
            published += count
            if not complete:
                # Perhaps only this process cannot reach Pulsar: let another relay try.
                with contextlib.suppress(Exception):
                    await self._release(shard)
                break
            if len(rows) < self._batch or not await self._hold(shard):
                break
            rows = await self._read(shard)
        return published

    async def _read(self, shard: int) -> list[_Row]:
        rows = await self._outbox._read(shard, self._cursors.get(shard), self._batch)
        self._seen[shard] = len(rows)
        # Everything before the first live row is gone (tombstones); only a writer whose
        # clock lags or whose write is slow can still add rows there.
        first = unix_time_from_uuid1(rows[0].id) if rows else time.time()
        self._cursors[shard] = min(first, time.time()) - self._reorder_window_s
        return rows

    def _lease_left(self, shard: int) -> float:
        return self._leases.get(shard, 0.0) - time.monotonic()

    async def _hold(self, shard: int) -> bool:
        """Take or renew this shard's lease; False when another relay has it."""
        left = self._lease_left(shard)
        if left > self._lease_s / 2:
            return True
        started = time.monotonic()
        if left > 0:
            if await self._outbox._renew_lease(shard, self.owner, self._lease_s):
                self._leases[shard] = started + self._lease_s - 1  # TTLs count whole seconds
                return True
            self._leases.pop(shard, None)
            _log.info("outbox shard lease lost", shard=shard)
        taken, other_until = await self._outbox._take_lease(shard, self.owner, self._lease_s)
        if taken:
            self._leases[shard] = started + self._lease_s - 1  # TTLs count whole seconds
            self._others.pop(shard, None)
            return True
        remaining = float(self._lease_s)
        if other_until is not None:
            until = other_until if other_until.tzinfo else other_until.replace(tzinfo=UTC)
            remaining = min(self._lease_s, max(0.0, (until - datetime.now(UTC)).total_seconds()))
        self._others[shard] = started + remaining
        return False

    async def _release(self, shard: int) -> None:
        self._leases.pop(shard, None)
        await self._outbox._release_lease(shard, self.owner)

    # Publishing ----------------------------------------------------------------------------

    async def _publish(self, shard: int, rows: list[_Row]) -> tuple[int, bool]:
        """Publish rows in waves: each wave sends the next event of every key, and a key
        whose event failed sends nothing more this round. Returns (published, all of them)."""
        queues: dict[str, deque[_Row]] = {}
        for row in rows:
            queues.setdefault(row.event.key, deque()).append(row)
        published, complete = 0, True
        while queues:
            wave = [queue[0] for queue in queues.values()]
            results = await asyncio.gather(*(self._send(row) for row in wave), return_exceptions=True)
            done: list[_Row] = []
            for row, result in zip(wave, results, strict=True):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                queue = queues[row.event.key]
                if isinstance(result, BaseException):
                    complete = False
                    del queues[row.event.key]  # its later events wait: per-key order
                    self._metrics.failures.labels("publish").inc()
                    self._round_errors.append(("publish", result))
                    continue
                done.append(row)
                queue.popleft()
                if not queue:
                    del queues[row.event.key]
            if done:
                await self._outbox._delete(shard, [row.id for row in done])
                published += len(done)
                self._seen[shard] = max(0, self._seen.get(shard, 0) - len(done))
                for row in done:
                    self._metrics.published.labels(row.event.topic).inc()
        return published, complete

    async def _send(self, row: _Row) -> None:
        topic = self._topic_prefix + row.event.topic
        producer = await self._producer(topic)
        loop = asyncio.get_running_loop()
        acknowledged: asyncio.Future[None] = loop.create_future()

        def callback(result: Any, _message_id: Any) -> None:
            loop.call_soon_threadsafe(_settle, acknowledged, result)

        properties = {**row.event.properties, "event_id": row.event.event_id}
        sent = time.perf_counter()
        acknowledged.add_done_callback(
            lambda _done: self._metrics.publish_seconds.observe(time.perf_counter() - sent)
        )
        try:
            producer.send_async(
                row.event.payload,
                callback,
                properties=properties,
                partition_key=row.event.key,
                event_timestamp=int(unix_time_from_uuid1(row.id) * 1000),
            )
        except Exception as error:  # a closed producer, a full queue
            self._broken_topics[topic] = error
            raise
        try:
            # The producer times the send out itself; this only guards a lost callback.
            await asyncio.wait_for(acknowledged, self._send_timeout_s + 5)
        except TimeoutError as error:
            self._broken_topics[topic] = error
            raise
        # A send the broker refused fails only its key: the event itself may be the problem.

    async def _producer(self, topic: str) -> Any:
        broken = self._broken_topics.get(topic)
        if broken is not None:
            raise _PublishError(f"{topic} failed earlier in this round") from broken
        producer = self._producers.get(topic)
        if producer is not None:
            return producer
        lock = self._producer_locks.setdefault(topic, asyncio.Lock())
        async with lock:
            producer = self._producers.get(topic)
            if producer is not None:
                return producer
            broken = self._broken_topics.get(topic)
            if broken is not None:
                raise _PublishError(f"{topic} failed earlier in this round") from broken
            try:
                if self._client is None:
                    self._client = await asyncio.to_thread(self._make_client)
                client = self._client
                producer = await asyncio.to_thread(
                    client.create_producer,
                    topic,
                    send_timeout_millis=int(self._send_timeout_s * 1000),
                    block_if_queue_full=False,
                    max_pending_messages=max(1000, self._batch * self._outbox.shards),
                    # One message per event: each carries its own key and properties, and a
                    # key-shared consumer is never handed a batch of several keys.
                    batching_enabled=False,
                )
            except Exception as error:
                self._broken_topics[topic] = error
                raise
            self._producers[topic] = producer
            return producer

    def _drop_client(self) -> asyncio.Future[None] | None:
        """Forget the client and its producers; close them in a thread of their own."""
        client, producers = self._client, list(self._producers.values())
        self._client, self._producers = None, {}
        if client is None and not producers:
            return None

        def close() -> None:
            for producer in producers:
                with contextlib.suppress(Exception):
                    producer.close()
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()

        # Closing waits for the broker, which may be what is down: never on the loop.
        return asyncio.get_running_loop().run_in_executor(None, close)


def _settle(future: asyncio.Future[None], result: Any) -> None:
    if future.done():
        return
    if result == pulsar.Result.Ok:
        future.set_result(None)
    else:
        future.set_exception(_PublishError(f"pulsar answered {result}"))


def _describe(error: BaseException) -> str:
    cause = error.__cause__
    text = f"{type(error).__name__}: {error}"
    return f"{text} ({type(cause).__name__}: {cause})" if cause is not None else text


#: The C++ client logs every failed reconnect at ERROR; the relay logs one warning per
#: outage instead. Set this logger's level to see the client's own lines.
_PULSAR_CLIENT_LOG = logging.getLogger("parley.outbox.pulsar_client")


def _client_factory(service_url: str, operation_timeout_s: float) -> Callable[[], PulsarClient]:
    def make() -> PulsarClient:
        logger = _PULSAR_CLIENT_LOG
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.CRITICAL)
        client: PulsarClient = pulsar.Client(
            service_url,
            operation_timeout_seconds=max(1, int(operation_timeout_s)),
            connection_timeout_ms=int(min(operation_timeout_s, 10) * 1000),
            logger=logger,
        )
        return client

    return make

"""The indexer: follows `message-created`, `conversation-deleted` and `user-deleted` into Weaviate.

- One shared subscription (`search.subscription`) over the three topics, shared by every
  indexer replica. Events are handled in batches: new messages are embedded on Triton
  together and written in one import per user; deletions remove a conversation's objects
  or a user's whole tenant.
- Cassandra decides, not the order of events: a message is indexed only while its
  conversation exists, and after writing, the conversations are read again; one deleted
  meanwhile has its objects removed at once. A conversation's row is deleted before its
  ConversationDeleted is published, so either that second read sees it gone, or the event
  comes after the write and removes it. Redelivered and out-of-order events therefore
  never leave a deleted conversation's message in the index.
- Nothing is acknowledged before it is applied. A batch that fails (Weaviate, Triton or
  Cassandra away) is retried, whole and in place, with a backoff doubling up to
  `retry_max_s`, until it succeeds: an outage delays the index and loses nothing. An event
  that cannot be decoded never will be: it goes to the dead-letter topic, with its reason.
- Lag: `parley_search_index_lag_events` (events received and not yet indexed, plus the
  subscription's backlog where Pulsar's admin API is configured) and
  `parley_search_index_lag_seconds` (age of the oldest event held unindexed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
import pulsar
import pulsar.asyncio
import structlog
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanContext, SpanKind
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from parley.events.v1 import events_pb2
from parley_core.consuming import Batches, Handler, initial_position
from parley_core.events import CONVERSATION_DELETED, MESSAGE_CREATED, USER_DELETED, topic_url
from parley_core.wire import from_timestamp, parse_name
from svc_history.search.documents import IndexedMessage
from svc_history.search.embedding import Embedder
from svc_history.search.index import MessageIndex
from svc_history.settings import HistorySettings
from svc_history.store import Stores

__all__ = ["DEAD_LETTER", "IndexerMetrics", "SearchIndexer"]

_log = structlog.get_logger("svc_history.indexer")
_tracer = trace.get_tracer("parley.search")

TOPICS = (MESSAGE_CREATED, CONVERSATION_DELETED, USER_DELETED)
#: Where events that cannot be decoded go.
DEAD_LETTER = "search-index-dead-letter"

_MESSAGE = "users/{user}/conversations/{conversation}/messages/{message}"
_CONVERSATION = "users/{user}/conversations/{conversation}"
_USER = "users/{user}"


class UndecodableEventError(Exception):
    pass


class IndexerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "parley_search_indexer_events_total",
            "History events handled by the search indexer, by topic and outcome "
            "(indexed, skipped: its conversation is gone or it has no text, applied, dead_letter).",
            ["topic", "outcome"],
            registry=registry,
        )
        self.retries = Counter(
            "parley_search_indexer_retries_total",
            "Batches retried because Weaviate, Triton or Cassandra failed.",
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "parley_search_indexer_batch_seconds",
            "Time to apply one batch of events to the index (retries included).",
            registry=registry,
        )
        self.lag_events = Gauge(
            "parley_search_index_lag_events",
            "Events behind: received and not yet indexed, plus the subscription's backlog "
            "when Pulsar's admin API is configured.",
            registry=registry,
        )
        self.subscribed = Gauge(
            "parley_search_indexer_subscribed",
            "1 while the indexer holds its Pulsar subscription.",
            registry=registry,
        )
        self.lag_seconds = Gauge(
            "parley_search_index_lag_seconds",
            "Age of the oldest event the indexer holds unindexed (0 when it holds none).",
            registry=registry,
        )


@dataclass
class _Batch:
    """What one batch asks of the index, decoded."""

    created: list[IndexedMessage] = field(default_factory=list)
    conversations_deleted: list[tuple[str, str]] = field(default_factory=list)
    users_deleted: list[str] = field(default_factory=list)


def _decode(topic: str, data: bytes) -> _Batch:
    """The event as work; UndecodableEventError when it is not a well-formed event."""
    batch = _Batch()
    try:
        if topic == MESSAGE_CREATED:
            created = events_pb2.MessageCreated.FromString(data)
            ids = parse_name(created.message, _MESSAGE, "message")
            when = from_timestamp(created.event_time, created.HasField("event_time"))
            if created.user != f"users/{ids['user']}" or when is None:
                raise UndecodableEventError("the message is not the event's user's, or has no time")
            batch.created.append(
                IndexedMessage(
                    ids["user"], ids["conversation"], ids["message"], created.author, created.text, when
                )
            )
        elif topic == CONVERSATION_DELETED:
            deleted = events_pb2.ConversationDeleted.FromString(data)
            ids = parse_name(deleted.conversation, _CONVERSATION, "conversation")
            if deleted.user != f"users/{ids['user']}":
                raise UndecodableEventError("the conversation is not the event's user's")
            batch.conversations_deleted.append((ids["user"], ids["conversation"]))
        elif topic == USER_DELETED:
            gone = events_pb2.UserDeleted.FromString(data)
            ids = parse_name(gone.user, _USER, "user")
            batch.users_deleted.append(ids["user"])
        else:
            raise UndecodableEventError(f"an event of an unexpected topic {topic!r}")
    except UndecodableEventError:
        raise
    except Exception as error:  # protobuf's DecodeError, a missing timestamp, ...
        raise UndecodableEventError(type(error).__name__) from error
    return batch


def _span_of(message: pulsar.Message) -> SpanContext | None:
    """The span context an event carries (its `traceparent` property), if valid."""
    context = trace.get_current_span(propagate.extract(message.properties())).get_span_context()
    return context if context.is_valid else None


def _short_topic(message: pulsar.Message) -> str:
    name: str = message.topic_name()
    return name.rsplit("/", 1)[-1].split("-partition-")[0]


class SearchIndexer:
    def __init__(
        self,
        settings: HistorySettings,
        stores: Stores,
        index: MessageIndex,
        embedder: Embedder,
        metrics: IndexerMetrics,
        *,
        client_factory: Callable[[str], pulsar.asyncio.Client] | None = None,
    ) -> None:
        self._settings = settings
        self._search = settings.search
        self._stores = stores
        self._index = index
        self._embedder = embedder
        self.metrics = metrics
        self._batches = Batches(
            settings.pulsar_url, self._subscribe, self._search.batch_size, name="search-indexer",
            client_factory=client_factory,
        )  # fmt: skip
        self._backlog_task: asyncio.Task[None] | None = None
        self._backlog = 0
        metrics.lag_events.set_function(lambda: self._batches.held() + self._backlog)
        metrics.lag_seconds.set_function(self._batches.oldest_held_s)
        metrics.subscribed.set_function(lambda: 1.0 if self.subscribed.is_set() else 0.0)

    def start(self) -> None:
        self._batches.start()
        if self._search.pulsar_admin_url:
            self._backlog_task = asyncio.create_task(self._watch_backlog(), name="search-backlog")

    async def stop(self) -> None:
        await self._batches.stop()
        if self._backlog_task is not None:
            self._backlog_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._backlog_task

    @property
    def subscribed(self) -> asyncio.Event:
        """Set while the indexer holds its subscription."""
        return self._batches.subscribed

    async def _subscribe(self, client: pulsar.asyncio.Client) -> tuple[pulsar.asyncio.Consumer, Handler]:
        consumer = await client.subscribe(
            [topic_url(topic) for topic in TOPICS],
            self._search.subscription,
            consumer_type=pulsar.ConsumerType.Shared,
            initial_position=initial_position(self._search.subscribe_from),
            receiver_queue_size=self._search.batch_size * 2,
        )
        dead_letters = await client.create_producer(topic_url(DEAD_LETTER))
        return consumer, functools.partial(self._handle, consumer, dead_letters)

    async def _handle(
        self,
        consumer: pulsar.asyncio.Consumer,
        dead_letters: pulsar.asyncio.Producer,
        batch: Sequence[pulsar.Message],
    ) -> None:
        started = time.perf_counter()
        work = _Batch()
        decoded: list[pulsar.Message] = []
        for message in batch:
            try:
                one = _decode(_short_topic(message), message.data())
            except UndecodableEventError as error:
                await self._dead_letter(consumer, dead_letters, message, str(error))
                continue
            work.created += one.created
            work.conversations_deleted += one.conversations_deleted
            work.users_deleted += one.users_deleted
            decoded.append(message)
        # One span per batch, linked to the trace of each call whose event it applies.
        links = [Link(span) for span in (_span_of(message) for message in decoded) if span is not None]
        with _tracer.start_as_current_span("search.index", kind=SpanKind.CONSUMER, links=links[:128]) as span:
            span.set_attribute("parley.events", len(decoded))
            wait = self._search.retry_base_s
            while True:
                try:
                    await self.apply(work)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    self.metrics.retries.inc()
                    span.add_event("retry", {"error": type(error).__name__})
                    _log.warning("indexing a batch failed; retrying", error=type(error).__name__, wait_s=wait)
                    await asyncio.sleep(wait)
                    wait = min(wait * 2, self._search.retry_max_s)
        # Acknowledgements are grouped by the client; awaiting them one by one would wait
        # for a flush each.
        await asyncio.gather(*(consumer.acknowledge(message) for message in decoded))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    async def apply(self, work: _Batch) -> None:
        """Bring the index in step with what these events describe and Cassandra holds."""
        live = await self._live(work.created)
        indexable = [m for m in work.created if m.indexable and (m.user_id, m.conversation_id) in live]
        if indexable:
            vectors = await self._embedder.embed(
                [m.text for m in indexable], timeout_s=self._search.embed_batch_timeout_s
            )
            await self._index.upsert(indexable, vectors)
            # Deleted while this was written? Then its ConversationDeleted may already be
            # behind us: remove what was just written.
            still = await self._live(indexable)
            gone = sorted({(m.user_id, m.conversation_id) for m in indexable} - still)
            for user_id, conversation_id in gone:
                await self._index.delete_conversation(user_id, conversation_id)
            # A user erased meanwhile: the write made their tenant again; it goes too.
            for user_id in sorted({user_id for user_id, _ in gone}):
                if not await self._stores.conversations.ids_of(user_id):
                    await self._index.delete_user(user_id)
        for user_id, conversation_id in dict.fromkeys(work.conversations_deleted):
            await self._index.delete_conversation(user_id, conversation_id)
        for user_id in dict.fromkeys(work.users_deleted):
            await self._index.delete_user(user_id)
        self._count(MESSAGE_CREATED, "indexed", len(indexable))
        self._count(MESSAGE_CREATED, "skipped", len(work.created) - len(indexable))
        self._count(CONVERSATION_DELETED, "applied", len(work.conversations_deleted))
        self._count(USER_DELETED, "applied", len(work.users_deleted))

    def _count(self, topic: str, outcome: str, amount: int) -> None:
        if amount:
            self.metrics.events.labels(topic, outcome).inc(amount)

    async def _live(self, messages: Sequence[IndexedMessage]) -> set[tuple[str, str]]:
        """The (user, conversation) pairs of these messages that exist in Cassandra."""
        by_user: dict[str, set[str]] = {}
        for message in messages:
            by_user.setdefault(message.user_id, set()).add(message.conversation_id)
        found = await asyncio.gather(
            *(self._stores.conversations.get_many(user_id, sorted(ids)) for user_id, ids in by_user.items())
        )
        return {(user_id, c) for user_id, rows in zip(by_user, found, strict=True) for c in rows}

    async def _dead_letter(
        self,
        consumer: pulsar.asyncio.Consumer,
        dead_letters: pulsar.asyncio.Producer,
        message: pulsar.Message,
        reason: str,
    ) -> None:
        topic = _short_topic(message)
        _log.warning("undecodable event to the dead-letter topic", topic=topic, reason=reason)
        await dead_letters.send(
            message.data(),
            properties={**message.properties(), "reason": reason[:200], "topic": topic,
                        "subscription": self._search.subscription},
            partition_key=message.partition_key() or None,
        )  # fmt: skip
        await consumer.acknowledge(message)
        self.metrics.events.labels(topic, "dead_letter").inc()

    async def _watch_backlog(self) -> None:
        """The subscription's backlog over the three topics, from Pulsar's admin API."""
        base = self._search.pulsar_admin_url.rstrip("/")
        async with httpx.AsyncClient(timeout=5.0) as http:
            while True:
                total = 0
                try:
                    for topic in TOPICS:
                        path = topic_url(topic).removeprefix("persistent://")
                        reply = await http.get(f"{base}/admin/v2/persistent/{path}/stats")
                        reply.raise_for_status()
                        subscription = (
                            reply.json().get("subscriptions", {}).get(self._search.subscription, {})
                        )
                        total += int(subscription.get("msgBacklog", 0))
                    # The backlog counts what the indexer holds too.
                    self._backlog = max(0, total - self._batches.held())
                except (httpx.HTTPError, ValueError) as error:
                    _log.warning("reading the indexer's backlog failed", error=type(error).__name__)
                await asyncio.sleep(10)

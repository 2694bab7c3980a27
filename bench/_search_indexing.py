"""The search bench's indexing part: MessageCreated events through svc_history's
SearchIndexer (timed in Triton and in Weaviate), against a raw import of the same objects."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pulsar
import pulsar.asyncio
from prometheus_client import CollectorRegistry

from bench._search_corpus import TOPICS_OF_TALK, Corpus, compose_messages
from bench._search_run import Options, progress, rate, ratio
from parley.events.v1 import events_pb2
from parley_core.events import MESSAGE_CREATED, topic_url
from parley_core.wire import timestamp
from svc_history.model import Conversation, message_name, now
from svc_history.search.documents import IndexedMessage
from svc_history.search.embedding import Embedder, Vector
from svc_history.search.index import MessageIndex
from svc_history.search.indexer import TOPICS, IndexerMetrics, SearchIndexer
from svc_history.settings import HistorySettings, SearchSettings
from svc_history.store import Stores, entry_of


class TimedEmbedder(Embedder):
    """svc_history's Embedder, with the time spent in it added up."""

    def __init__(self, settings: SearchSettings) -> None:
        super().__init__(settings)
        self.seconds = 0.0
        self.texts = 0

    async def embed(self, texts: Sequence[str], *, timeout_s: float | None = None) -> list[Vector]:
        started = time.perf_counter()
        try:
            return await super().embed(texts, timeout_s=timeout_s)
        finally:
            self.seconds += time.perf_counter() - started
            self.texts += len(texts)


class TimedIndex(MessageIndex):
    """svc_history's MessageIndex, with the time spent in `upsert` added up."""

    def __init__(self, settings: SearchSettings) -> None:
        super().__init__(settings)
        self.seconds = 0.0
        self.calls = 0

    async def upsert(self, messages: Sequence[IndexedMessage], vectors: Sequence[Vector]) -> None:
        started = time.perf_counter()
        try:
            await super().upsert(messages, vectors)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1


def publish(url: str, messages: Sequence[IndexedMessage]) -> None:
    """MessageCreated events as the outbox relay publishes them (blocking; run it in a
    thread): one message per event, keyed by user, the event id as a property."""
    client = pulsar.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        producer = client.create_producer(
            topic_url(MESSAGE_CREATED), batching_enabled=False, block_if_queue_full=True,
            max_pending_messages=5000,
        )  # fmt: skip
        failures: list[Any] = []

        def sent(result: Any, _message_id: Any) -> None:
            if result != pulsar.Result.Ok:
                failures.append(result)

        for message in messages:
            event = events_pb2.MessageCreated(
                event_id=str(uuid.uuid4()),
                event_time=timestamp(message.create_time),
                user=f"users/{message.user_id}",
                message=message_name(message.user_id, message.conversation_id, message.message_id),
                author=message.author,
                text=message.text,
            )
            producer.send_async(
                event.SerializeToString(), sent, partition_key=message.user_id,
                properties={"event_id": event.event_id},
            )  # fmt: skip
        producer.flush()
        producer.close()
        if failures:
            raise RuntimeError(f"{len(failures)} events were not published: {failures[0]}")
    finally:
        client.close()


async def drop_subscription(url: str, name: str) -> None:
    """Remove the indexer's subscription: it would keep a backlog of every later event.

    One topic at a time: unsubscribing a consumer of a topic list, then closing the client,
    crashed the process inside libpulsar (SIGSEGV, pulsar-client 3.13.0) about one time in
    fifteen here; one consumer per topic never did."""
    client = pulsar.asyncio.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        for topic in TOPICS:
            with contextlib.suppress(Exception):
                consumer = await client.subscribe(
                    topic_url(topic), name, consumer_type=pulsar.ConsumerType.Shared
                )
                await consumer.unsubscribe()
    finally:
        await client.close()


def _counter(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    value = registry.get_sample_value(name, labels or {})
    return float(value) if value is not None else 0.0


async def new_conversations(stores: Stores, user_id: str, titles: Sequence[str]) -> list[str]:
    """Conversations of a user as CreateConversation writes them (row and listing entry)."""
    ids = []
    for title in titles:
        moment = now()
        conversation = Conversation(
            user_id=user_id, conversation_id=str(uuid.uuid4()), title=title, model="parley-tiny",
            system_prompt="", folder="", tags=(), pinned=False, archived=False, active_message="",
            create_time=moment, update_time=moment, version=str(uuid.uuid4()),
        )  # fmt: skip
        await stores.conversations.insert(conversation)
        await stores.conversations.put_entry(user_id, entry_of(conversation))
        ids.append(conversation.conversation_id)
    return ids


async def indexing_bench(
    settings: HistorySettings, stores: Stores, corpus: Corpus, options: Options, run_id: str
) -> dict[str, Any]:
    rng = random.Random(options.seed + 1)
    topics = list(TOPICS_OF_TALK)
    per_user = 4
    users = [f"bench-{run_id}-u{index}" for index in range(options.index_users)]
    conversations: list[tuple[str, str]] = []
    for user in users:
        titles = [topics[(len(conversations) + i) % len(topics)] for i in range(per_user)]
        conversations += [(user, c) for c in await new_conversations(stores, user, titles)]
    composed = compose_messages(corpus, len(conversations), options.index_messages, rng)
    start = now() - timedelta(hours=1)
    messages = [
        IndexedMessage(
            conversations[conversation][0], conversations[conversation][1], str(uuid.uuid1()),
            "user" if index % 2 == 0 else "assistant", corpus.text(parts),
            start + timedelta(milliseconds=index),
        )
        for index, (conversation, parts) in enumerate(composed)
    ]  # fmt: skip
    count = len(messages)
    words = sum(len(m.text.split()) for m in messages) / count

    indexed_settings = settings.model_copy(
        update={"search": settings.search.model_copy(update={"collection": f"BenchIndexer{run_id}"})}
    )
    raw_settings = settings.search.model_copy(update={"collection": f"BenchImport{run_id}"})
    index, embedder = TimedIndex(indexed_settings.search), TimedEmbedder(indexed_settings.search)
    raw = MessageIndex(raw_settings)
    registry = CollectorRegistry()
    indexer = SearchIndexer(indexed_settings, stores, index, embedder, IndexerMetrics(registry))
    results: dict[str, Any] = {
        "messages": count,
        "users": len(users),
        "conversations": len(conversations),
        "words_per_message": words,
        "indexer_batch_size": settings.search.batch_size,
    }
    try:
        await index.tenants()  # creates the collections, outside the timing
        await raw.tenants()
        indexer.start()
        await asyncio.wait_for(indexer.subscribed.wait(), 30)
        progress(f"indexing: {count} MessageCreated events through the indexer")
        started = time.perf_counter()
        publishing = asyncio.create_task(asyncio.to_thread(publish, settings.pulsar_url, messages))
        labels = {"topic": MESSAGE_CREATED, "outcome": "indexed"}
        deadline = started + max(300.0, count / 5)
        while (indexed := _counter(registry, "parley_search_indexer_events_total", labels)) < count:
            if publishing.done():
                publishing.result()  # a failed publish ends the wait
            if time.perf_counter() > deadline:
                raise RuntimeError(
                    f"the indexer indexed {indexed:.0f} of {count} messages before the deadline"
                )
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        await publishing
        batches = _counter(registry, "parley_search_indexer_batch_seconds_count")
        batch_s = _counter(registry, "parley_search_indexer_batch_seconds_sum")
        skipped = _counter(registry, "parley_search_indexer_events_total", {**labels, "outcome": "skipped"})
        results["indexer"] = {
            "seconds": elapsed,
            "messages_per_s": rate(count, elapsed),
            "batches": batches,
            "messages_per_batch": ratio(count, batches),
            "embed_s": embedder.seconds,
            "upsert_s": index.seconds,
            "rest_of_batches_s": batch_s - embedder.seconds - index.seconds,
            "embed_share": ratio(embedder.seconds, elapsed),
            "upsert_share": ratio(index.seconds, elapsed),
            "skipped": skipped,
            "retries": _counter(registry, "parley_search_indexer_retries_total"),
        }
        await indexer.stop()  # idle from here on; stopping it again below is harmless

        # The indexer's own vectors, read back, for the raw import of the same objects.
        vectors: dict[uuid.UUID, Vector] = {}
        for user in users:
            async for object_id, _properties, vector in index.objects(user):
                vectors[object_id] = vector
        if len(vectors) != count:
            raise RuntimeError(f"the indexer's collection holds {len(vectors)} objects, not {count}")
        batch = settings.search.batch_size
        progress(f"indexing: the same {count} objects imported raw, {batch} at a time")
        started = time.perf_counter()
        for first in range(0, count, batch):
            chunk = messages[first : first + batch]
            await raw.upsert(chunk, [vectors[m.object_id] for m in chunk])
        raw_s = time.perf_counter() - started
        results["raw"] = {"seconds": raw_s, "messages_per_s": rate(count, raw_s)}
        results["indexer_to_raw_ratio"] = ratio(
            results["indexer"]["messages_per_s"], results["raw"]["messages_per_s"]
        )
    finally:
        await indexer.stop()
        await drop_subscription(settings.pulsar_url, settings.search.subscription)
        for dropped in (index, raw):
            with contextlib.suppress(Exception):
                await dropped.drop()
            await dropped.close()
        await embedder.close()
    return results

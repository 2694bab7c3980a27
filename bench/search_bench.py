"""Search benchmark: the indexer against a raw import, Triton against the model alone, and
SearchMessages latency over 100,000 messages of one user, against Weaviate's own.

Every number comes from one run on this machine, against the local stack's real Cassandra,
Redis, Pulsar, Weaviate and Triton (svc_history and svc_session run in this process).

The texts. Chat-like sentences are generated from word lists (twenty topics, their nouns,
verbs and adjectives, thirty templates) with a fixed seed, `--sentences` distinct ones, and
embedded once by minilm-l6 on Triton; sentences and vectors are cached under
`.state/cache/bench/`, so a rerun skips that. A message is 2 or 3 sentences of one topic
(a conversation keeps to its topic four times in five), joined by spaces.

- indexing: `--index-messages` MessageCreated events (over `--index-users` users, whose
  conversations exist in Cassandra: the indexer indexes only those) are published to
  `message-created` as the outbox relay publishes them (one message per event, keyed by
  user id). svc_history's `SearchIndexer` runs in this process, subscribed first with a
  subscription of this run's own, writing to a fresh collection; its rate is messages from
  the first publish until the last object is written (its `indexed` counter), per second.
  `embed` and `upsert` are its time in Triton and in Weaviate (timed around its Embedder and
  MessageIndex); the rest of a batch is Cassandra (which conversations exist, read twice),
  decoding, acknowledgements and the waits before retries; `retries` counts batches it
  retried (Triton, Weaviate or Cassandra failing, or a batch's embedding past its timeout,
  which other work on this machine can bring about). The raw import writes the same
  objects, with the vectors the indexer computed (read back from its collection), into
  another fresh collection with `MessageIndex.upsert`, in batches of the indexer's batch
  size, one after another as the indexer writes them. The ratio is indexer messages/s over
  raw messages/s.
- embedding: `--embed-texts` messages per round, embedded through Triton with svc_history's
  `Embedder` (requests of 64 texts, `--embed-concurrency` at once), and by the same model
  outside Triton (`SentenceEncoder` from model_repo/minilm-l6/1/minilm.py, in chunks of 64,
  each what one Triton execution gets). The model runs in a child process with the
  interpreter of Triton's model environment, where its dependency (tokenizers) and weights
  package are installed and whose numpy (and BLAS) is the one Triton runs it with: the
  project's venv has neither, and the same numpy keeps the comparison to Triton's serving
  cost alone. Only `SentenceEncoder.embed` is timed there, not the pipe. Rounds alternate
  (Triton, model, Triton, ...) so drift hits both alike. The ratio is Triton texts/s over
  the model's; beside it, CPU per text (Triton: its server and model processes, from /proc;
  the model alone: its process's CPU time inside `embed`), which other work on the machine
  changes far less than it changes the rates. `max_abs_difference` compares the two vectors
  of each text.
- search: `--messages` messages of one user (registered with svc_session), spread over
  `--conversations` conversations in Cassandra (conversations, message rows and the tree,
  written with svc_history's stores, each conversation a chain of messages) and imported
  into a fresh collection with `MessageIndex.upsert` (batches of `--import-batch`).
  Their vectors are COMPOSED, not model outputs: a message's vector is the normalised sum
  of its sentences' model vectors. Embedding 100,000 such texts on Triton takes about an
  hour on 2 cores (at the rate `embedding` measures); composing keeps the vectors the
  model's own distribution (the index's search cost depends on it; random vectors would not
  have it). `composed_vs_model_cosine` (in embedding) says how close a composed vector is
  to the model's vector of the same text.
  Then `--queries` queries (one to three words of one topic's word lists) after `--warmup`,
  each one in turn through every path, the modes in a rotating order:
  - platform: SearchMessages through svc_history's gRPC API (an HistoryApp in this process,
    the user's token; `--page-size` hits): auth, the query's embedding on Triton
    (SEMANTIC, HYBRID), the Weaviate query, the hits read back from Cassandra (each hit's
    conversation, its tree, its message), snippets.
  - raw: `MessageIndex.search` for the same page, the query's vector computed beforehand.
  - the parts of a platform call, each alone: `embed` (Triton, one query), `read back`
    (what SearchMessages reads from Cassandra for the raw hits, with svc_history's stores)
    and, beside it, `whole trees` (the whole message tree of every conversation with a hit:
    what SearchMessages read before it read only each hit's node and siblings).
  Latencies are p50 and p99 (nearest rank); the ratio is platform over raw.
  `MessageIndex.search` completes a run of equal scores at the end of the page by fetching
  again, twice as many; the composed texts repeat sentences, so equal BM25 scores (and
  such second fetches in FULL_TEXT and HYBRID) are more common here than in real chats.

Everything the run creates (keyspaces, collections, the subscription) is removed at the
end. This machine has 2 cores, shared by every server, this process and other work on it:
the rates are lower bounds, the ratios compare paths under the same sharing.

Run: `PARLEY_TEST_PORT_OFFSET=3000 .venv/bin/python -m bench.search_bench` (10-15 min once the
stack is installed, a minute more the first time, to embed the sentences; it starts
Cassandra, Redis, Pulsar, Weaviate and Triton at port offset 1000, or PARLEY_TEST_PORT_OFFSET,
and `--keep-stack` leaves them running; `--parts` runs some parts only). A quick run:
`--index-messages 300 --messages 5000 --conversations 20 --queries 30 --embed-texts 64`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import faulthandler
import hashlib
import json
import math
import os
import random
import re
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pulsar
import pulsar.asyncio
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from bench._measure import json_ready, percentile, tree_cpu_s
from bench._search_corpus import (
    TOPICS_OF_TALK,
    Corpus,
    Vectors,
    compose_messages,
    generate_sentences,
    make_queries,
)
from parley.events.v1 import events_pb2
from parley.history.v1 import history_pb2 as pb
from parley.session.v1 import session_pb2
from parley_core.cassandra import connect
from parley_core.events import MESSAGE_CREATED, topic_url
from parley_core.logging import configure_logging
from parley_core.stubs import history_stub, session_stub
from parley_core.wire import timestamp
from parley_stack.config import REPO_ROOT, StackConfig
from parley_stack.testing import LocalStack, test_port_offset
from svc_history.app import HistoryApp
from svc_history.model import Conversation, Message, message_name, now
from svc_history.search.documents import IndexedMessage
from svc_history.search.embedding import Embedder, Vector
from svc_history.search.index import MessageIndex, Mode
from svc_history.search.indexer import TOPICS, IndexerMetrics, SearchIndexer
from svc_history.settings import HistorySettings, Limits, SearchSettings
from svc_history.store import Stores, entry_of
from svc_session.app import SessionApp
from svc_session.keys import KeyEncryptionKey
from svc_session.settings import BucketSize, SessionSettings

#: The Redis database of the run's svc_history and svc_session (apart from the services' own).
REDIS_DB = 1
PASSWORD = "benchmark passphrase 1"
MODEL_DIR = REPO_ROOT / "model_repo" / "minilm-l6"
#: Texts per request to Triton and per chunk of the model alone (the model's max_batch_size).
EMBED_CHUNK = 64
MODES: tuple[Mode, ...] = ("full_text", "semantic", "hybrid")
WIRE_MODES = {
    "full_text": pb.SEARCH_MODE_FULL_TEXT,
    "semantic": pb.SEARCH_MODE_SEMANTIC,
    "hybrid": pb.SEARCH_MODE_HYBRID,
}


# The corpus (bench/_search_corpus.py), embedded and cached ------------------------------


async def load_corpus(cache_dir: Path, count: int, seed: int, embedder: Embedder) -> tuple[Corpus, bool]:
    """The sentences and their vectors, from the cache or embedded now on Triton (and cached).
    The cache is keyed by the sentences themselves: other word lists make another file."""
    sentences, topics = generate_sentences(count, seed)
    digest = hashlib.sha256("\n".join(sentences).encode()).hexdigest()[:16]
    path = cache_dir / f"search-sentences-minilm-l6-{digest}.npz"
    if path.is_file():
        with np.load(path) as stored:
            if list(stored["sentences"]) == sentences:
                return Corpus(sentences, topics, stored["vectors"].astype(np.float32)), True
    _progress(f"embedding {count} sentences on Triton (cached for the next run)")
    vectors = np.asarray(await embed_all(embedder, sentences, 4), dtype=np.float32)
    await asyncio.to_thread(_store, path, sentences, vectors)
    return Corpus(sentences, topics, vectors), False


def _store(path: Path, sentences: list[str], vectors: Vectors) -> None:
    """Write the cache file whole or not at all (a run stopped halfway leaves no torn file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp.npz")
    np.savez(partial, sentences=np.array(sentences), vectors=vectors)
    partial.replace(path)


async def embed_all(embedder: Embedder, texts: Sequence[str], concurrency: int) -> list[Vector]:
    """Every text's vector, in requests of EMBED_CHUNK, `concurrency` requests at once."""
    chunks = [texts[start : start + EMBED_CHUNK] for start in range(0, len(texts), EMBED_CHUNK)]
    results: list[list[Vector]] = [[] for _ in chunks]

    async def embed(index: int) -> None:
        results[index] = await embedder.embed(chunks[index], timeout_s=300)

    await pooled(range(len(chunks)), embed, concurrency)
    return [vector for chunk in results for vector in chunk]


# Helpers ----------------------------------------------------------------------------------


async def pooled(items: Iterable[Any], work: Callable[[Any], Awaitable[None]], concurrency: int) -> None:
    """`work` on every item, `concurrency` at once."""
    iterator = iter(items)

    async def worker() -> None:
        for item in iterator:
            await work(item)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Count, mean, p50 and p99 of durations (seconds in, milliseconds out)."""
    return {
        "count": len(seconds),
        "mean_ms": sum(seconds) / len(seconds) * 1000 if seconds else math.nan,
        "p50_ms": percentile(seconds, 0.50) * 1000,
        "p99_ms": percentile(seconds, 0.99) * 1000,
    }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else math.nan


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def _progress(message: str) -> None:
    print(f"bench: {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# Indexing ---------------------------------------------------------------------------------


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
        _progress(f"indexing: {count} MessageCreated events through the indexer")
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
        _progress(f"indexing: the same {count} objects imported raw, {batch} at a time")
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


# Embedding --------------------------------------------------------------------------------


def _pbtxt_parameters(config: str) -> dict[str, str]:
    """config.pbtxt's `parameters: { key: "k" value: { string_value: "v" } }` entries."""
    found = re.findall(r'key:\s*"([^"]+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"', config)
    return dict(found)


class LocalEncoder:
    """The model alone: bench/_local_encoder.py in a child process with the interpreter of
    Triton's model environment (see that module for why)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def start(cls, config: StackConfig) -> LocalEncoder:
        env = config.cache_dir / "triton" / "model-env"
        python = env / "bin" / "python"
        parameters = _pbtxt_parameters((MODEL_DIR / "config.pbtxt").read_text())
        package, folder = parameters["weights_package"], parameters["model_dir"]
        # Where model.py looks: beside it, else inside the installed weights package.
        candidates = [
            MODEL_DIR / "1" / folder,
            *sorted(env.glob(f"lib/python*/site-packages/{package}/{folder}")),
        ]
        model_dir = next((c for c in candidates if (c / "model.safetensors").is_file()), None)
        if not python.exists() or model_dir is None:
            raise RuntimeError(f"Triton's model environment is not installed at {env} (start triton first)")
        process = await asyncio.create_subprocess_exec(
            str(python), str(REPO_ROOT / "bench" / "_local_encoder.py"),
            "--minilm", str(MODEL_DIR / "1" / "minilm.py"), "--model-dir", str(model_dir),
            "--chunk-size", parameters["chunk_size"],
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024,
        )  # fmt: skip
        encoder = cls(process)
        ready = await encoder._read()
        if not ready.get("ready"):
            raise RuntimeError(f"the local encoder did not start: {ready}")
        return encoder

    async def _read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = await self._process.stdout.readline()
        if not line:
            raise RuntimeError("the local encoder ended")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def embed(self, texts: Sequence[str]) -> tuple[float, float, Vectors]:
        """The seconds the model took, the CPU seconds it used, and the vectors."""
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"texts": list(texts)}).encode() + b"\n")
        await self._process.stdin.drain()
        reply = await self._read()
        vectors = np.frombuffer(base64.b64decode(reply["vectors"]), dtype="<f4").reshape(len(texts), -1)
        return float(reply["seconds"]), float(reply["cpu_s"]), vectors.astype(np.float32)

    async def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            await asyncio.wait_for(self._process.wait(), 10)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()


async def embedding_bench(
    search: SearchSettings, config: StackConfig, triton_pid: int, corpus: Corpus, options: Options
) -> dict[str, Any]:
    rng = random.Random(options.seed + 2)
    composed = compose_messages(corpus, len(TOPICS_OF_TALK), options.embed_texts * options.embed_rounds, rng)
    texts = [corpus.text(parts) for _, parts in composed]
    embedder = Embedder(search)
    local = await LocalEncoder.start(config)
    triton_s = local_s = triton_cpu_s = local_cpu_s = 0.0
    triton_vectors: list[Vector] = []
    local_vectors: list[Vectors] = []
    try:
        await embedder.embed(texts[:8], timeout_s=60)  # warm-up: the channel, the model's first call
        await local.embed(texts[:8])
        for round_index in range(options.embed_rounds):
            share = texts[round_index * options.embed_texts : (round_index + 1) * options.embed_texts]
            _progress(f"embedding: round {round_index + 1}, {len(share)} texts through Triton, then alone")
            started, cpu = time.perf_counter(), tree_cpu_s(triton_pid)
            triton_vectors += await embed_all(embedder, share, options.embed_concurrency)
            triton_s += time.perf_counter() - started
            triton_cpu_s += tree_cpu_s(triton_pid) - cpu
            for first in range(0, len(share), EMBED_CHUNK):
                seconds, cpu_used, vectors = await local.embed(share[first : first + EMBED_CHUNK])
                local_s += seconds
                local_cpu_s += cpu_used
                local_vectors.append(vectors)
    finally:
        await local.close()
        await embedder.close()
    from_triton = np.asarray(triton_vectors, dtype=np.float32)
    alone = np.concatenate(local_vectors)
    cosines = (corpus.composed([parts for _, parts in composed]) * from_triton).sum(axis=1)
    count = len(texts)
    results: dict[str, Any] = {
        "texts": count,
        "words_per_text": sum(len(t.split()) for t in texts) / count,
        "request_texts": EMBED_CHUNK,
        "concurrency": options.embed_concurrency,
        "rounds": options.embed_rounds,
        "triton": {
            "seconds": triton_s,
            "texts_per_s": rate(count, triton_s),
            "cpu_s": triton_cpu_s,
            "cpu_ms_per_text": triton_cpu_s * 1000 / count,
        },
        "model_alone": {
            "seconds": local_s,
            "texts_per_s": rate(count, local_s),
            "cpu_s": local_cpu_s,
            "cpu_ms_per_text": local_cpu_s * 1000 / count,
        },
        "max_abs_difference": float(np.abs(from_triton - alone).max()),
        "composed_vs_model_cosine": {
            "mean": float(cosines.mean()),
            "p01": float(np.quantile(cosines, 0.01)),
            "min": float(cosines.min()),
        },
    }
    results["triton_to_model_ratio"] = ratio(
        results["triton"]["texts_per_s"], results["model_alone"]["texts_per_s"]
    )
    results["triton_to_model_cpu_ratio"] = ratio(triton_cpu_s, local_cpu_s)
    return results


# Search -----------------------------------------------------------------------------------


@dataclass
class SearchUser:
    user_id: str
    metadata: tuple[tuple[str, str], ...]


async def register(session: SessionApp, run_id: str) -> SearchUser:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{session.port}") as channel:
        reply = await session_stub(channel).Register(
            session_pb2.RegisterRequest(
                email=f"search-bench-{run_id}@parley.test", password=PASSWORD, display_name="Bench"
            )
        )
    token = reply.credentials.access_token
    return SearchUser(reply.user.name.removeprefix("users/"), (("authorization", f"Bearer {token}"),))


async def load_messages(
    app: HistoryApp, index: MessageIndex, corpus: Corpus, user_id: str, options: Options
) -> dict[str, Any]:
    """The user's conversations and messages in Cassandra, then in the index."""
    rng = random.Random(options.seed + 3)
    topics = list(TOPICS_OF_TALK)
    titles = [f"{topics[i % len(topics)]} {i // len(topics) + 1}" for i in range(options.conversations)]
    conversation_ids = await new_conversations(app.stores, user_id, titles)
    composed = compose_messages(corpus, len(conversation_ids), options.messages, rng)
    bucket_size = app.settings.message_bucket_size
    start = now() - timedelta(days=30)
    last: dict[int, str] = {}
    written: dict[int, int] = {}
    messages: list[Message] = []
    for number, (conversation, parts) in enumerate(composed):
        position = written.get(conversation, 0)
        message_id = str(uuid.uuid1())
        messages.append(
            Message(
                user_id=user_id, conversation_id=conversation_ids[conversation], message_id=message_id,
                parent_id=last.get(conversation, ""), author="user" if position % 2 == 0 else "assistant",
                text=corpus.text(parts), model="" if position % 2 == 0 else "parley-tiny", state="complete",
                usage=None, turn="", create_time=start + timedelta(milliseconds=number * 10),
                bucket=position // bucket_size,
            )
        )  # fmt: skip
        last[conversation] = message_id
        written[conversation] = position + 1
    results: dict[str, Any] = {"messages": len(messages), "conversations": len(conversation_ids)}

    stores, done = app.stores, 0

    async def write(message: Message) -> None:
        nonlocal done
        # As AppendMessage: the row, then its node in the tree.
        await stores.messages.insert(message)
        await stores.messages.add_node(message)
        done += 1
        if done % 20_000 == 0:
            _progress(f"search: {done} messages written to Cassandra")

    _progress(f"search: writing {len(messages)} messages to Cassandra")
    await write(messages[0])  # prepares the statements once
    started = time.perf_counter()
    await pooled(messages[1:], write, 128)
    cassandra_s = time.perf_counter() - started
    # Each conversation's last message is its active one, as after the appends.
    for conversation, message_id in last.items():
        row = await stores.conversations.get(user_id, conversation_ids[conversation])
        if row is not None:
            await stores.conversations.touch(replace(row, active_message=message_id, update_time=now()))
    results["cassandra_messages_per_s"] = rate(len(messages) - 1, cassandra_s)

    _progress(f"search: importing {len(messages)} objects into Weaviate, {options.import_batch} at a time")
    parts_of = [parts for _, parts in composed]
    await index.tenants()
    started = time.perf_counter()
    for first in range(0, len(messages), options.import_batch):
        chunk = messages[first : first + options.import_batch]
        vectors = corpus.composed(parts_of[first : first + options.import_batch])
        await index.upsert([IndexedMessage.of(m) for m in chunk], vectors.tolist())
        if (first // options.import_batch) % 20 == 19:
            _progress(f"search: {first + len(chunk)} objects imported")
    import_s = time.perf_counter() - started
    results["weaviate_import_objects_per_s"] = rate(len(messages), import_s)
    return results


@dataclass
class SearchSamples:
    platform: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})
    raw: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})
    read_back: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})
    trees: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})
    conversations: dict[str, list[int]] = field(default_factory=lambda: {m: [] for m in MODES})
    hits: dict[str, list[int]] = field(default_factory=lambda: {m: [] for m in MODES})
    raw_hits: dict[str, list[int]] = field(default_factory=lambda: {m: [] for m in MODES})
    embed: list[float] = field(default_factory=list)


async def search_bench(
    app: HistoryApp, session: SessionApp, corpus: Corpus, options: Options, run_id: str
) -> dict[str, Any]:
    search = app.settings.search
    user = await register(session, run_id)
    index = MessageIndex(search)
    embedder = Embedder(search)
    try:
        results = await load_messages(app, index, corpus, user.user_id, options)
        queries = make_queries(options.warmup + options.queries, random.Random(options.seed + 4))
        samples, warm = SearchSamples(), SearchSamples()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = history_stub(channel)
            _progress(f"search: {options.warmup} warm-up queries, then {options.queries}")
            for number, query in enumerate(queries):
                into = warm if number < options.warmup else samples
                await one_query(stub, index, embedder, app, user, query, number, options.page_size, into)
                if number >= options.warmup and (number - options.warmup + 1) % 50 == 0:
                    _progress(f"search: {number - options.warmup + 1} queries")
    finally:
        with contextlib.suppress(Exception):
            await index.drop()
        await index.close()
        await embedder.close()
    modes: dict[str, Any] = {}
    for mode in MODES:
        platform, raw = latency_summary(samples.platform[mode]), latency_summary(samples.raw[mode])
        modes[mode] = {
            "platform": platform,
            "raw": raw,
            "read_back": latency_summary(samples.read_back[mode]),
            "trees": latency_summary(samples.trees[mode]),
            "conversations_per_page": _mean(samples.conversations[mode]),
            "hits_mean": _mean(samples.hits[mode]),
            "raw_hits_mean": _mean(samples.raw_hits[mode]),
            "empty_share": sum(1 for h in samples.hits[mode] if h == 0) / max(1, len(samples.hits[mode])),
            "p50_ratio": ratio(platform["p50_ms"], raw["p50_ms"]),
            "p99_ratio": ratio(platform["p99_ms"], raw["p99_ms"]),
        }
    results |= {
        "queries": options.queries,
        "warmup": options.warmup,
        "page_size": options.page_size,
        "modes": modes,
        "embed_query": latency_summary(samples.embed),
        "example_queries": queries[options.warmup : options.warmup + 5],
    }
    return results


async def one_query(
    stub: Any, index: MessageIndex, embedder: Embedder, app: HistoryApp, user: SearchUser, query: str,
    number: int, page_size: int, samples: SearchSamples,
) -> None:  # fmt: skip
    """One query through every path: its embedding, then each mode on the platform and raw
    (with the read-back and the trees' reads alone), the modes in a rotating order."""
    started = time.perf_counter()
    [vector] = await embedder.embed([query])
    samples.embed.append(time.perf_counter() - started)
    order = MODES[number % len(MODES) :] + MODES[: number % len(MODES)]
    for mode in order:
        request = pb.SearchMessagesRequest(
            parent="users/me", query=query, mode=WIRE_MODES[mode], page_size=page_size
        )
        started = time.perf_counter()
        reply = await stub.SearchMessages(request, metadata=user.metadata)
        samples.platform[mode].append(time.perf_counter() - started)
        samples.hits[mode].append(len(reply.hits))
    for mode in order:
        started = time.perf_counter()
        hits = await index.search(
            user.user_id, mode, query, None if mode == "full_text" else vector, 0, page_size
        )
        samples.raw[mode].append(time.perf_counter() - started)
        samples.raw_hits[mode].append(len(hits))
        started = time.perf_counter()
        await app.domain.search.read_back(user.user_id, query, hits)
        samples.read_back[mode].append(time.perf_counter() - started)
        conversations = list(dict.fromkeys(hit.conversation_id for hit in hits))
        samples.conversations[mode].append(len(conversations))
        started = time.perf_counter()
        await asyncio.gather(*(app.domain.messages.tree(c) for c in conversations))
        samples.trees[mode].append(time.perf_counter() - started)


# The run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    parts: tuple[str, ...]
    index_messages: int
    index_users: int
    embed_texts: int
    embed_concurrency: int
    embed_rounds: int
    sentences: int
    messages: int
    conversations: int
    import_batch: int
    queries: int
    warmup: int
    page_size: int
    seed: int
    keep_stack: bool
    json_path: Path | None


PARTS = ("indexing", "embedding", "search")


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.search_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--parts", default=",".join(PARTS), help="which parts to run, comma-separated")
    parser.add_argument("--index-messages", type=_positive, default=2_000, help="events through the indexer")
    parser.add_argument(
        "--index-users", type=_positive, default=8, help="users the indexed messages belong to"
    )
    parser.add_argument("--embed-texts", type=_positive, default=256, help="texts per embedding round")
    parser.add_argument("--embed-concurrency", type=_positive, default=4, help="Triton requests at once")
    parser.add_argument("--embed-rounds", type=_positive, default=2, help="alternating embedding rounds")
    parser.add_argument("--sentences", type=_positive, default=4_000, help="distinct sentences embedded")
    parser.add_argument("--messages", type=_positive, default=100_000, help="messages of the searched user")
    parser.add_argument("--conversations", type=_positive, default=200, help="conversations they are in")
    parser.add_argument("--import-batch", type=_positive, default=1_000, help="objects per Weaviate import")
    parser.add_argument("--queries", type=_positive, default=200, help="measured queries per mode")
    parser.add_argument("--warmup", type=int, default=20, help="queries per mode before measuring")
    parser.add_argument("--page-size", type=_positive, default=20, help="hits per SearchMessages page")
    parser.add_argument("--seed", type=int, default=7, help="seed of the texts and queries")
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = set(parts) - set(PARTS)
    if unknown or not parts:
        parser.error(f"unknown parts {sorted(unknown)}; known: {', '.join(PARTS)}")
    return Options(
        parts=parts, index_messages=args.index_messages, index_users=args.index_users,
        embed_texts=args.embed_texts, embed_concurrency=args.embed_concurrency,
        embed_rounds=args.embed_rounds,
        sentences=args.sentences, messages=args.messages, conversations=args.conversations,
        import_batch=args.import_batch, queries=args.queries, warmup=max(0, args.warmup),
        page_size=min(args.page_size, 100), seed=args.seed, keep_stack=args.keep_stack, json_path=args.json,
    )  # fmt: skip


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


async def run(options: Options) -> dict[str, Any]:
    config = StackConfig(port_offset=test_port_offset())
    stack = LocalStack(config, reuse=options.keep_stack)
    began = time.perf_counter()
    results: dict[str, Any] = {
        "machine": {
            "cores": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "port_offset": config.port_offset,
        },
        "options": {k: v for k, v in vars(options).items() if k != "json_path"},
    }
    try:
        _progress("starting cassandra, redis, pulsar, weaviate and triton (minutes the first time)")
        await asyncio.to_thread(stack.ensure, "cassandra", "redis", "pulsar", "weaviate", "triton")
        results |= await _measure(stack, config, options)
    finally:
        if not options.keep_stack:
            await asyncio.to_thread(stack.close)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["seconds"] = time.perf_counter() - began
    return results


def _settings(stack: LocalStack, run_id: str) -> tuple[HistorySettings, SessionSettings]:
    cql_host, cql_port = stack.endpoint("cassandra-1", "cql")
    redis_host, redis_port = stack.endpoint("redis", "redis")
    weaviate_host, weaviate_http = stack.endpoint("weaviate", "http")
    _, weaviate_grpc = stack.endpoint("weaviate", "grpc")
    triton_host, triton_grpc = stack.endpoint("triton", "grpc")
    broker = stack.stack.table.running("pulsar")
    assert broker is not None
    redis_url = f"redis://{redis_host}:{redis_port}/{REDIS_DB}"
    search = SearchSettings(
        weaviate_host=weaviate_host, weaviate_http_port=weaviate_http, weaviate_grpc_port=weaviate_grpc,
        triton_target=f"{triton_host}:{triton_grpc}", collection=f"BenchSearch{run_id}",
        subscription=f"bench-search-{run_id}", subscribe_from="latest", indexer_metrics_port=-1,
    )  # fmt: skip
    history = HistorySettings(
        cassandra_hosts=[cql_host], cassandra_port=cql_port, keyspace=f"bench_search_{run_id}",
        redis_url=redis_url, pulsar_url=broker.endpoints["pulsar"],
        page_token_key=SecretStr(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()),
        metrics_port=-1, shutdown_grace_s=1, limits=Limits(messages_per_conversation=1_000_000),
        search=search,
    )  # fmt: skip
    session = SessionSettings(
        cassandra_hosts=[cql_host], cassandra_port=cql_port, keyspace=f"bench_search_session_{run_id}",
        redis_url=redis_url, metrics_port=-1, shutdown_grace_s=1,
        dev_mailbox_dir=Path(tempfile.mkdtemp(prefix="search-bench-mail-")),
        key_encryption_key=SecretStr(KeyEncryptionKey.generate()),
        # The user's token outlives the run (the default 15 min may not).
        access_token_ttl_s=3600,
        auth_address_bucket=BucketSize(capacity=1_000, refill_per_s=100),
    )  # fmt: skip
    return history, session


async def _measure(stack: LocalStack, config: StackConfig, options: Options) -> dict[str, Any]:
    run_id = secrets.token_hex(4)
    history_settings, session_settings = _settings(stack, run_id)
    results: dict[str, Any] = {"run_id": run_id, "seconds_per_part": {}}
    triton = stack.stack.table.running("triton")
    assert triton is not None
    triton_pid = triton.pid
    session: SessionApp | None = None
    app: HistoryApp | None = None
    try:
        session = await SessionApp.start(session_settings)
        app = await HistoryApp.start(history_settings, key_source=session.keys)
        embedder = Embedder(history_settings.search)
        try:
            started = time.perf_counter()
            corpus, cached = await load_corpus(
                config.cache_dir / "bench", options.sentences, options.seed, embedder
            )
        finally:
            await embedder.close()
        results["corpus"] = {
            "sentences": len(corpus.sentences),
            "topics": len(TOPICS_OF_TALK),
            "from_cache": cached,
            "seconds": time.perf_counter() - started,
        }
        for part in options.parts:
            started = time.perf_counter()
            if part == "indexing":
                results["indexing"] = await indexing_bench(
                    history_settings, app.stores, corpus, options, run_id
                )
            elif part == "embedding":
                results["embedding"] = await embedding_bench(
                    history_settings.search, config, triton_pid, corpus, options
                )
            else:
                results["search"] = await search_bench(app, session, corpus, options, run_id)
            results["seconds_per_part"][part] = time.perf_counter() - started
    finally:
        if app is not None:
            await app.stop()
        if session is not None:
            await session.stop()
        await drop_keyspaces(stack, [history_settings.keyspace, session_settings.keyspace])
    return results


async def drop_keyspaces(stack: LocalStack, keyspaces: Sequence[str]) -> None:
    host, port = stack.endpoint("cassandra-1", "cql")
    cluster, session = await asyncio.to_thread(connect, [host], port)
    try:
        for keyspace in keyspaces:
            try:
                await asyncio.to_thread(session.execute, f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
            except Exception as error:
                _progress(f"keyspace {keyspace} left behind: {error!r}")
    finally:
        await asyncio.to_thread(cluster.shutdown)


# Output ---------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _rows(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Columns: the first and a "detail" column aligned left, numbers right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    left = {0} | {i for i, name in enumerate(rows[0]) if name == "detail"}
    return [
        "  ".join(cell.ljust(width) if i in left else cell.rjust(width) for i, (cell, width) in
                  enumerate(zip(row, widths, strict=True))).rstrip()
        for row in rows
    ]  # fmt: skip


def table(results: dict[str, Any]) -> str:
    """The headline numbers as plain tables."""
    machine = results["machine"]
    parts = ", ".join(f"{name} {_fmt(seconds, 0)} s" for name, seconds in results["seconds_per_part"].items())
    corpus = results["corpus"]
    lines = [
        f"machine: {machine['cores']} cores, load average {machine['load_average_at_start']} at start, "
        f"{machine['load_average_at_end']} at end; took {_fmt(results['seconds'] / 60)} min ({parts})",
        f"sentences: {corpus['sentences']} over {corpus['topics']} topics "
        f"({'from the cache' if corpus['from_cache'] else 'embedded now'})",
    ]
    if "indexing" in results:
        lines += ["", *_indexing_table(results["indexing"])]
    if "embedding" in results:
        lines += ["", *_embedding_table(results["embedding"])]
    if "search" in results:
        lines += ["", *_search_table(results["search"])]
    return "\n".join(lines)


def _indexing_table(r: dict[str, Any]) -> list[str]:
    indexer, raw = r["indexer"], r["raw"]
    breakdown = (
        f"{_fmt(indexer['batches'], 0)} batches of {_fmt(indexer['messages_per_batch'], 0)}; embed "
        f"{_fmt(indexer['embed_s'])} s ({_fmt(indexer['embed_share'] * 100, 0)}%), upsert "
        f"{_fmt(indexer['upsert_s'])} s ({_fmt(indexer['upsert_share'] * 100, 0)}%), the rest "
        f"(Cassandra, acks, retry waits) {_fmt(indexer['rest_of_batches_s'])} s; retries "
        f"{_fmt(indexer['retries'], 0)}"
    )
    rows = [
        ("path", "messages/s", "seconds", "detail"),
        ("indexer", _fmt(indexer["messages_per_s"]), _fmt(indexer["seconds"]), breakdown),
        ("raw import", _fmt(raw["messages_per_s"]), _fmt(raw["seconds"]),
         f"MessageIndex.upsert, {r['indexer_batch_size']} objects per call"),
    ]  # fmt: skip
    return [
        f"indexing: {r['messages']} messages ({_fmt(r['words_per_message'])} words each) of {r['users']} "
        f"users in {r['conversations']} conversations",
        *_rows(rows),
        f"indexer / raw: {_fmt(r['indexer_to_raw_ratio'], 4)}",
    ]


def _embedding_table(r: dict[str, Any]) -> list[str]:
    cosine = r["composed_vs_model_cosine"]
    triton, alone = r["triton"], r["model_alone"]
    rows = [
        ("path", "texts/s", "seconds", "CPU ms/text", "detail"),
        ("triton", _fmt(triton["texts_per_s"]), _fmt(triton["seconds"]), _fmt(triton["cpu_ms_per_text"]),
         f"Embedder, requests of {r['request_texts']}, {r['concurrency']} at once; CPU: Triton's processes"),
        ("model alone", _fmt(alone["texts_per_s"]), _fmt(alone["seconds"]), _fmt(alone["cpu_ms_per_text"]),
         f"SentenceEncoder.embed, chunks of {r['request_texts']}"),
    ]  # fmt: skip
    return [
        f"embedding: {r['texts']} texts ({_fmt(r['words_per_text'])} words each), {r['rounds']} "
        "alternating rounds",
        *_rows(rows),
        f"triton / model alone: {_fmt(r['triton_to_model_ratio'], 3)} by texts/s, "
        f"{_fmt(r['triton_to_model_cpu_ratio'], 3)} by CPU per text  (largest difference between their "
        f"vectors: {r['max_abs_difference']:.1e})",
        f"composed vector vs the model's vector of the same text: cosine mean {_fmt(cosine['mean'], 3)}, "
        f"1st percentile {_fmt(cosine['p01'], 3)}, min {_fmt(cosine['min'], 3)}",
    ]


def _search_table(r: dict[str, Any]) -> list[str]:
    latency = [("mode (ms)", "platform p50", "p99", "raw p50", "p99", "platform/raw p50", "p99")]
    parts = [
        ("mode (ms)", "read back p50", "p99", "whole trees p50", "p99", "hits", "conversations", "empty")
    ]
    for mode, m in r["modes"].items():
        platform, raw, back, trees = m["platform"], m["raw"], m["read_back"], m["trees"]
        latency.append((
            mode, _fmt(platform["p50_ms"]), _fmt(platform["p99_ms"]), _fmt(raw["p50_ms"]),
            _fmt(raw["p99_ms"]), _fmt(m["p50_ratio"], 2), _fmt(m["p99_ratio"], 2),
        ))  # fmt: skip
        parts.append((
            mode, _fmt(back["p50_ms"]), _fmt(back["p99_ms"]), _fmt(trees["p50_ms"]), _fmt(trees["p99_ms"]),
            _fmt(m["hits_mean"]), _fmt(m["conversations_per_page"]), f"{_fmt(m['empty_share'] * 100, 0)}%",
        ))  # fmt: skip
    embed = r["embed_query"]
    examples = ", ".join(repr(q) for q in r["example_queries"][:3])
    return [
        f"search: {r['messages']} messages of one user in {r['conversations']} conversations (composed "
        f"vectors); Cassandra {_fmt(r['cassandra_messages_per_s'], 0)} messages/s, Weaviate import "
        f"{_fmt(r['weaviate_import_objects_per_s'], 0)} objects/s",
        f"{r['queries']} queries per mode after {r['warmup']}, {r['page_size']} hits per page; "
        f"e.g. {examples}",
        *_rows(latency),
        "",
        "the parts of a platform call, each alone:",
        *_rows(parts),
        f"embed one query on Triton: p50 {_fmt(embed['p50_ms'])} ms, p99 {_fmt(embed['p99_ms'])} ms",
        "(read back: SearchMessages' Cassandra reads for a page's hits; whole trees: each hit "
        "conversation's whole message tree, read at once, as the read back did before; "
        "hits, conversations: mean per page; empty: pages without a hit)",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    # libpulsar has crashed this process (see drop_subscription): should it happen again,
    # every thread's Python stack goes to stderr.
    faulthandler.enable(all_threads=True)
    options = parse_args(argv)
    configure_logging("console", "warning")
    results = asyncio.run(run(options))
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(json_ready(results), indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()

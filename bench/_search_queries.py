"""The search bench's search part: one user's messages in Cassandra and Weaviate, then
queries through SearchMessages, through MessageIndex alone, and through each part of a call."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import grpc

from bench._search_corpus import TOPICS_OF_TALK, Corpus, compose_messages, make_queries
from bench._search_indexing import new_conversations
from bench._search_run import Options, latency_summary, pooled, progress, rate, ratio
from parley.history.v1 import history_pb2 as pb
from parley.session.v1 import session_pb2
from parley_core.stubs import history_stub, session_stub
from svc_history.app import HistoryApp
from svc_history.model import Message, now
from svc_history.search.documents import IndexedMessage
from svc_history.search.embedding import Embedder
from svc_history.search.index import MessageIndex, Mode
from svc_session.app import SessionApp

PASSWORD = "benchmark passphrase 1"
MODES: tuple[Mode, ...] = ("full_text", "semantic", "hybrid")
WIRE_MODES = {
    "full_text": pb.SEARCH_MODE_FULL_TEXT,
    "semantic": pb.SEARCH_MODE_SEMANTIC,
    "hybrid": pb.SEARCH_MODE_HYBRID,
}


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
            progress(f"search: {done} messages written to Cassandra")

    progress(f"search: writing {len(messages)} messages to Cassandra")
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

    progress(f"search: importing {len(messages)} objects into Weaviate, {options.import_batch} at a time")
    parts_of = [parts for _, parts in composed]
    await index.tenants()
    started = time.perf_counter()
    for first in range(0, len(messages), options.import_batch):
        chunk = messages[first : first + options.import_batch]
        vectors = corpus.composed(parts_of[first : first + options.import_batch])
        await index.upsert([IndexedMessage.of(m) for m in chunk], vectors.tolist())
        if (first // options.import_batch) % 20 == 19:
            progress(f"search: {first + len(chunk)} objects imported")
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


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


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
            progress(f"search: {options.warmup} warm-up queries, then {options.queries}")
            for number, query in enumerate(queries):
                into = warm if number < options.warmup else samples
                await one_query(stub, index, embedder, app, user, query, number, options.page_size, into)
                if number >= options.warmup and (number - options.warmup + 1) % 50 == 0:
                    progress(f"search: {number - options.warmup + 1} queries")
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

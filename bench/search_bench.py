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
import faulthandler
import json
import os
import secrets
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bench._measure import json_ready
from bench._search_corpus import TOPICS_OF_TALK
from bench._search_embedding import embedding_bench
from bench._search_indexing import indexing_bench
from bench._search_queries import search_bench
from bench._search_report import table
from bench._search_run import Options, load_corpus, progress
from parley_core.cassandra import connect
from parley_core.logging import configure_logging
from parley_stack.config import StackConfig
from parley_stack.testing import LocalStack, test_port_offset
from svc_history.app import HistoryApp
from svc_history.search.embedding import Embedder
from svc_history.settings import HistorySettings, Limits, SearchSettings
from svc_session.app import SessionApp
from svc_session.keys import KeyEncryptionKey
from svc_session.settings import BucketSize, SessionSettings

#: The Redis database of the run's svc_history and svc_session (apart from the services' own).
REDIS_DB = 1


# The run ------------------------------------------------------------------------------------


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
        progress("starting cassandra, redis, pulsar, weaviate and triton (minutes the first time)")
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
                progress(f"keyspace {keyspace} left behind: {error!r}")
    finally:
        await asyncio.to_thread(cluster.shutdown)


def main(argv: Sequence[str] | None = None) -> None:
    # libpulsar has crashed this process (see drop_subscription, bench/_search_indexing.py):
    # should it happen again, every thread's Python stack goes to stderr.
    faulthandler.enable(all_threads=True)
    options = parse_args(argv)
    configure_logging("console", "warning")
    results = asyncio.run(run(options))
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(json_ready(results), indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()

"""svc_history benchmark: AppendMessage against raw inserts, and ListMessages latency.

Everything is measured in one run on this machine, against the local stack's real
Cassandra (and Redis and Pulsar, which svc_history needs):

- append/raw: AppendMessage calls per second through svc_history (gRPC, auth, the
  request-id claim, the message row, the outbox event, the tree, the conversation's active
  message and order, the count) divided by raw cassandra-driver inserts per second of the
  same message rows into the same table layout, at the same consistency (LOCAL_QUORUM) and
  the same concurrency. Each concurrent writer appends to a conversation of its own, one
  message after another (a chain), as chat turns do.
- ListMessages latency for a 1,000-message conversation: the first page of the active path
  (100 messages), the whole path (10 pages), and one page of 500 of the all view.

Run: `.venv/bin/python -m bench.history_bench` (starts what it needs at port offset 1000
unless PARLEY_TEST_PORT_OFFSET or PARLEY_TEST_REUSE_STACK=1 say otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
from pydantic import SecretStr

from parley.history.v1 import history_pb2 as pb
from parley.session.v1 import session_pb2
from parley_core.cassandra import connect, execute
from parley_core.logging import configure_logging
from parley_core.stubs import history_stub, session_stub
from parley_stack.testing import LocalStack, stack_config_for_tests
from svc_history.app import HistoryApp
from svc_history.settings import HistorySettings, Limits
from svc_session.app import SessionApp
from svc_session.keys import KeyEncryptionKey
from svc_session.settings import BucketSize, SessionSettings

PASSWORD = "benchmark passphrase 1"

_RAW_INSERT = (
    "INSERT INTO {ks}.messages (conversation_id, bucket, message_id, user_id, parent_id, author, text, "
    "model, state, input_tokens, output_tokens, has_usage, turn, create_time) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _timed(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    durations: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        durations.append(time.perf_counter() - started)
    return durations


async def run(appends: int, concurrency: int, list_calls: int, text_chars: int) -> dict[str, float]:
    stack = LocalStack(stack_config_for_tests(), reuse=os.environ.get("PARLEY_TEST_REUSE_STACK") == "1")
    stack.ensure("cassandra", "redis", "pulsar")
    cql_host, cql_port = stack.endpoint("cassandra-1", "cql")
    redis_host, redis_port = stack.endpoint("redis", "redis")
    broker = stack.stack.table.running("pulsar")
    assert broker is not None
    run_id = secrets.token_hex(4)
    session = await SessionApp.start(
        SessionSettings(
            cassandra_hosts=[cql_host],
            cassandra_port=cql_port,
            keyspace=f"bench_session_{run_id}",
            redis_url=f"redis://{redis_host}:{redis_port}/1",
            metrics_port=-1,
            dev_mailbox_dir=Path(tempfile.mkdtemp()),
            key_encryption_key=SecretStr(KeyEncryptionKey.generate()),
            auth_address_bucket=BucketSize(capacity=1_000_000, refill_per_s=1_000_000),
        )
    )
    settings = HistorySettings(
        cassandra_hosts=[cql_host],
        cassandra_port=cql_port,
        keyspace=f"bench_history_{run_id}",
        redis_url=f"redis://{redis_host}:{redis_port}/1",
        pulsar_url=broker.endpoints["pulsar"],
        page_token_key=SecretStr(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()),
        metrics_port=-1,
        limits=Limits(messages_per_conversation=1_000_000),
    )
    history = await HistoryApp.start(settings, key_source=session.keys)
    results: dict[str, float] = {}
    text = ("All work and no play makes a benchmark dull. " * (text_chars // 45 + 1))[:text_chars]
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{session.port}") as session_channel,
            grpc.aio.insecure_channel(f"127.0.0.1:{history.port}") as channel,
        ):
            router_token = await session.issue_service_token("svc_router")
            stub = history_stub(channel)

            async def writer(index: int) -> _Writer:
                """A user of their own per concurrent writer, as real traffic spreads over users."""
                registered = await session_stub(session_channel).Register(
                    session_pb2.RegisterRequest(
                        email=f"bench-{run_id}-{index}@parley.test", password=PASSWORD, display_name="B"
                    )
                )
                token = registered.credentials.access_token
                return _Writer(
                    registered.user.name.removeprefix("users/"),
                    (("authorization", f"Bearer {token}"),),
                    (("authorization", f"Bearer {router_token}"), ("x-parley-user-token", token)),
                )

            async def conversation(who: _Writer) -> str:
                reply = await stub.CreateConversation(
                    pb.CreateConversationRequest(
                        parent="users/me", conversation=pb.Conversation(title="bench")
                    ),
                    metadata=who.user_md,
                )
                return reply.conversation.name

            async def chain(who: _Writer, name: str, count: int) -> None:
                parent = ""
                for _ in range(count):
                    message = pb.Message(
                        name=f"{name}/messages/{uuid.uuid1()}",
                        parent_message=parent,
                        author=pb.AUTHOR_USER,
                        text=text,
                    )
                    await stub.AppendMessage(
                        pb.AppendMessageRequest(parent=name, message=message, request_id=str(uuid.uuid4())),
                        metadata=who.router_md,
                    )
                    parent = message.name

            writers = [await writer(i) for i in range(concurrency)]
            # Warm up: connections, prepared statements, the JWT cache.
            warm = [await conversation(w) for w in writers]
            await asyncio.gather(*(chain(w, name, 5) for w, name in zip(writers, warm, strict=True)))
            await _drained(history)

            per_writer = appends // concurrency
            names = [await conversation(w) for w in writers]
            started = time.perf_counter()
            await asyncio.gather(
                *(chain(w, name, per_writer) for w, name in zip(writers, names, strict=True))
            )
            append_s = time.perf_counter() - started
            results["append_calls_per_s"] = per_writer * concurrency / append_s
            await _drained(history)  # the raw inserts get a Cassandra as quiet as the appends had

            # The same rows, straight into the same table with the driver.
            insert = await asyncio.to_thread(
                history.cql.prepare, _RAW_INSERT.replace("{ks}", settings.keyspace)
            )

            async def raw_chain(user_id: str, count: int) -> None:
                conversation_id, parent = uuid.uuid4(), None
                for _ in range(count):
                    message_id = uuid.uuid1()
                    await execute(
                        history.cql,
                        insert,
                        (conversation_id, 0, message_id, user_id, parent, "user", text, "", "complete", 0, 0,
                         False, "", datetime.now(UTC)),
                    )  # fmt: skip
                    parent = message_id

            await asyncio.gather(*(raw_chain(w.user_id, 5) for w in writers))
            started = time.perf_counter()
            await asyncio.gather(*(raw_chain(w.user_id, per_writer) for w in writers))
            raw_s = time.perf_counter() - started
            results["raw_inserts_per_s"] = per_writer * concurrency / raw_s
            results["append_over_raw"] = results["append_calls_per_s"] / results["raw_inserts_per_s"]

            # ListMessages on a 1,000-message conversation.
            reader = writers[0]
            thousand = await conversation(reader)
            await chain(reader, thousand, 1000)
            await _drained(history)  # measure reads on a quiet service

            async def list_page(view: pb.MessageView, size: int, token: str = "") -> pb.ListMessagesResponse:
                return await stub.ListMessages(
                    pb.ListMessagesRequest(parent=thousand, view=view, page_size=size, page_token=token),
                    metadata=reader.user_md,
                )

            async def whole_path() -> None:
                token, count = "", 0
                while True:
                    page = await list_page(pb.MESSAGE_VIEW_ACTIVE_PATH, 100, token)
                    count += len(page.messages)
                    token = page.next_page_token
                    if not token:
                        break
                assert count == 1000, count

            first = await list_page(pb.MESSAGE_VIEW_ACTIVE_PATH, 100)
            assert len(first.messages) == 100
            await _timed(lambda: list_page(pb.MESSAGE_VIEW_ACTIVE_PATH, 100), 10)  # warm up
            active = await _timed(lambda: list_page(pb.MESSAGE_VIEW_ACTIVE_PATH, 100), list_calls)
            everything = await _timed(lambda: list_page(pb.MESSAGE_VIEW_ALL, 500), list_calls)
            whole = await _timed(whole_path, max(5, list_calls // 10))
            results["list_1000_active_page100_p50_ms"] = statistics.median(active) * 1000
            results["list_1000_active_page100_p95_ms"] = _percentile(active, 0.95) * 1000
            results["list_1000_all_page500_p50_ms"] = statistics.median(everything) * 1000
            results["list_1000_all_page500_p95_ms"] = _percentile(everything, 0.95) * 1000
            results["list_1000_whole_active_path_10_pages_p50_ms"] = statistics.median(whole) * 1000
    finally:
        await history.stop()
        await session.stop()
        for keyspace in (settings.keyspace, f"bench_session_{run_id}"):
            await asyncio.to_thread(_drop, stack, keyspace)
        stack.close()
    results["appends"] = float(per_writer * concurrency)
    results["concurrency"] = float(concurrency)
    results["text_chars"] = float(text_chars)
    return results


@dataclass(frozen=True)
class _Writer:
    user_id: str
    user_md: tuple[tuple[str, str], ...]
    router_md: tuple[tuple[str, str], ...]


async def _drained(history: HistoryApp) -> None:
    """Wait until the outbox relay has published everything the run added."""
    while await history.relay.publish_pending():
        pass


def _drop(stack: LocalStack, keyspace: str) -> None:
    host, port = stack.endpoint("cassandra-1", "cql")
    cluster, session = connect([host], port)
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
    finally:
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--list-calls", type=int, default=100)
    parser.add_argument("--text-chars", type=int, default=400)
    args = parser.parse_args()
    configure_logging("console", "warning")  # one log line per RPC would dominate the timing
    results = asyncio.run(run(args.appends, args.concurrency, args.list_calls, args.text_chars))
    print(json.dumps({k: round(v, 3) for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()

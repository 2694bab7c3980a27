"""svc_history started in-process against the local stack's real Cassandra, Redis, Pulsar,
Weaviate and Triton, with svc_session beside it for users' and services' tokens, and the
search indexer following its events."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import grpc
import pulsar
import pytest

from parley_core.stubs import history_stub, session_stub
from parley_stack.testing import LocalStack
from svc_history.app import HistoryApp
from svc_history.search.app import IndexerApp
from svc_history.search.index import MessageIndex
from svc_history.settings import HistorySettings, Limits, SearchSettings
from svc_session.app import SessionApp
from tests.integration.history.helpers import Person, new_person

# svc_session's fixtures, reused: the app that issues every token these tests use.
from tests.integration.session.conftest import mailbox, session_app, session_servers  # noqa: F401

if TYPE_CHECKING:
    from pathlib import Path

    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub

#: One page-token key for the test run: every HistoryApp of a keyspace must share it.
PAGE_TOKEN_KEY = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
#: This run's own Weaviate collection and indexer subscription, so a reused stack keeps its
#: index apart.
SEARCH_COLLECTION = f"MessageTest{secrets.token_hex(4)}"
SEARCH_SUBSCRIPTION = f"search-indexer-test-{secrets.token_hex(4)}"
#: Small buckets, so a hundred messages already span many partitions.
BUCKET_SIZE = 7
MESSAGE_LIMIT = 150
MESSAGE_CHARS = 4_000


@pytest.fixture(scope="session")
def history_servers(local_stack: LocalStack) -> LocalStack:
    local_stack.ensure("cassandra", "redis", "pulsar", "weaviate", "triton")
    return local_stack


def pulsar_url(stack: LocalStack) -> str:
    """The broker's pulsar:// URL."""
    running = stack.stack.table.running("pulsar")
    assert running is not None
    return running.endpoints["pulsar"]


def search_settings(stack: LocalStack, **overrides: object) -> SearchSettings:
    weaviate_host, weaviate_http = stack.endpoint("weaviate", "http")
    _, weaviate_grpc = stack.endpoint("weaviate", "grpc")
    triton_host, triton_grpc = stack.endpoint("triton", "grpc")
    values: dict[str, object] = {
        "weaviate_host": weaviate_host,
        "weaviate_http_port": weaviate_http,
        "weaviate_grpc_port": weaviate_grpc,
        "triton_target": f"{triton_host}:{triton_grpc}",
        "collection": SEARCH_COLLECTION,
        "subscription": SEARCH_SUBSCRIPTION,
        "subscribe_from": "latest",
        "retry_base_s": 0.2,
        "retry_max_s": 2.0,
        "indexer_metrics_port": -1,
    }
    values.update(overrides)
    return SearchSettings(**values)  # type: ignore[arg-type]


def history_settings(stack: LocalStack, **overrides: object) -> HistorySettings:
    cql_host, cql_port = stack.endpoint("cassandra-1", "cql")
    redis_host, redis_port = stack.endpoint("redis", "redis")
    values: dict[str, object] = {
        "cassandra_hosts": [cql_host],
        "cassandra_port": cql_port,
        # A keyspace of this test run's own, so a reused stack keeps its data apart.
        "keyspace": f"history_test_{secrets.token_hex(4)}",
        "redis_url": f"redis://{redis_host}:{redis_port}/0",
        "pulsar_url": pulsar_url(stack),
        "page_token_key": PAGE_TOKEN_KEY,
        "metrics_port": -1,
        "shutdown_grace_s": 1,
        "message_bucket_size": BUCKET_SIZE,
        "limits": Limits(messages_per_conversation=MESSAGE_LIMIT, message_chars=MESSAGE_CHARS),
        "outbox_poll_s": 0.5,
        "outbox_max_backoff_s": 1.0,
        "outbox_send_timeout_s": 3.0,
        "search": search_settings(stack),
    }
    values.update(overrides)
    return HistorySettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
async def history_app(
    history_servers: LocalStack,
    session_app: SessionApp,  # noqa: F811 - the fixture imported above
) -> AsyncIterator[HistoryApp]:
    app = await HistoryApp.start(history_settings(history_servers), key_source=session_app.keys)
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture(scope="session")
async def indexer_app(history_app: HistoryApp) -> AsyncIterator[IndexerApp]:
    """The search indexer, following the events of history_app's keyspace; the test
    collection is dropped at the end."""
    app = await IndexerApp.start(history_app.settings)
    try:
        yield app
    finally:
        await app.stop()
        index = MessageIndex(history_app.settings.search)
        try:
            await index.drop()
        finally:
            await index.close()


@pytest.fixture
async def history(history_app: HistoryApp) -> AsyncIterator[HistoryServiceAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{history_app.port}") as channel:
        yield history_stub(channel)


@pytest.fixture(scope="session")
async def people(
    session_app: SessionApp,  # noqa: F811 - the fixture imported above
    mailbox: Path,  # noqa: F811 - the fixture imported above
) -> AsyncIterator[PeopleFactory]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{session_app.port}") as channel:
        yield PeopleFactory(session_app, session_stub(channel), mailbox)


class PeopleFactory:
    """Makes signed-up, verified users with their tokens (and the router's token for them)."""

    def __init__(self, app: SessionApp, stub: object, mail: Path) -> None:
        self._app, self._stub, self._mailbox = app, stub, mail

    async def __call__(self) -> Person:
        return await new_person(self._app, self._stub, self._mailbox)


@pytest.fixture
async def alice(people: PeopleFactory) -> Person:
    return await people()


@pytest.fixture
async def bob(people: PeopleFactory) -> Person:
    return await people()


@pytest.fixture(scope="session")
def pulsar_client(history_servers: LocalStack) -> Iterator[pulsar.Client]:
    client = pulsar.Client(
        pulsar_url(history_servers),
        operation_timeout_seconds=10,
        logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error),
    )
    try:
        yield client
    finally:
        client.close()

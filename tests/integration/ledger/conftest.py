"""svc_ledger started in-process against the local stack's real Cassandra, Redis and Pulsar,
with svc_session beside it for users' and admins' tokens."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pulsar
import pytest

from parley_core.cassandra import connect
from parley_core.stubs import ledger_stub
from parley_stack.testing import LocalStack
from svc_ledger.app import LedgerApp
from svc_ledger.settings import LedgerSettings
from svc_session.app import SessionApp

# History's and session's fixtures, reused: people with tokens, an admin, Pulsar.
from tests.integration.history.conftest import (  # noqa: F401
    PeopleFactory,
    alice,
    bob,
    history_servers,
    people,
    pulsar_client,
    pulsar_url,
)
from tests.integration.ledger.helpers import usage_producer
from tests.integration.session.conftest import admin_token, mailbox, session_app, session_servers  # noqa: F401

if TYPE_CHECKING:
    from parley.ledger.v1.ledger_pb2_grpc import LedgerServiceAsyncStub

#: One keyspace (and subscription) for the ledgers of this test run.
KEYSPACE = f"ledger_test_{secrets.token_hex(4)}"


def ledger_settings(stack: LocalStack, **overrides: Any) -> LedgerSettings:
    cql_host, cql_port = stack.endpoint("cassandra-1", "cql")
    redis_host, redis_port = stack.endpoint("redis", "redis")
    values: dict[str, Any] = {
        "cassandra_hosts": [cql_host],
        "cassandra_port": cql_port,
        "keyspace": KEYSPACE,
        "redis_url": f"redis://{redis_host}:{redis_port}/0",
        "pulsar_url": pulsar_url(stack),
        "subscription": f"ledger-{KEYSPACE}",
        # The shared stack's topic holds earlier runs' events; this run bills its own.
        "subscribe_from": "latest",
        "metrics_port": -1,
        "shutdown_grace_s": 1,
        "retry_base_s": 0.2,
        "retry_max_s": 2.0,
        "budget_check_s": 0.2,
    }
    values.update(overrides)
    return LedgerSettings(**values)


@pytest.fixture(scope="session")
async def ledger_app(
    history_servers: LocalStack,  # noqa: F811
    session_app: SessionApp,  # noqa: F811
) -> AsyncIterator[LedgerApp]:
    app = await LedgerApp.start(ledger_settings(history_servers), key_source=session_app.keys)
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture
async def start_ledger(
    history_servers: LocalStack,  # noqa: F811
    session_app: SessionApp,  # noqa: F811
) -> AsyncIterator[Callable[..., Any]]:
    """Start more ledgers (own settings: a catalog, a keyspace); stopped after the test."""
    started: list[LedgerApp] = []

    async def start(**overrides: Any) -> LedgerApp:
        app = await LedgerApp.start(
            ledger_settings(history_servers, **overrides), key_source=session_app.keys
        )
        started.append(app)
        return app

    try:
        yield start
    finally:
        for app in reversed(started):
            await app.stop()
        # Keyspaces of their own are dropped: every table costs the test Cassandra heap.
        own = {app.settings.keyspace for app in started} - {KEYSPACE}
        if own:
            await asyncio.to_thread(run_cql, history_servers, [f"DROP KEYSPACE IF EXISTS {ks}" for ks in own])


def run_cql(stack: LocalStack, statements: list[str]) -> None:
    """Schema statements (drop, truncate) on the stack's Cassandra, one after another."""
    host, port = stack.endpoint("cassandra-1", "cql")
    cluster, session = connect([host], port)
    try:
        for statement in statements:
            session.execute(statement, timeout=60)
    finally:
        cluster.shutdown()


@pytest.fixture
async def ledger(ledger_app: LedgerApp) -> AsyncIterator[LedgerServiceAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ledger_app.port}") as channel:
        yield ledger_stub(channel)


@pytest.fixture(scope="session")
def producer(pulsar_client: pulsar.Client) -> Iterator[pulsar.Producer]:  # noqa: F811
    made = usage_producer(pulsar_client)
    try:
        yield made
    finally:
        made.close()


def admin_md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def write_catalog(directory: Path, body: str) -> Path:
    path = directory / "catalog.toml"
    path.write_text(body)
    return path

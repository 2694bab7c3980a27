"""svc_router started in-process against the local stack's real Redis, Cassandra, Pulsar and
Triton, with svc_session (tokens, service identity) and svc_history (in-process) beside it."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pulsar
import pytest
from redis.asyncio import Redis

from parley_core.budgets import BudgetState
from parley_core.ratelimit import BucketSize
from parley_core.stubs import chat_stub, history_stub
from parley_stack.testing import LocalStack
from svc_history.app import HistoryApp
from svc_router.app import RouterApp
from svc_router.settings import OpenAIEndpoint, RouterSettings, TierLimits
from svc_session.app import SessionApp

# History's and session's fixtures, reused: the apps the router calls.
from tests.integration.history.conftest import (  # noqa: F401
    PeopleFactory,
    alice,
    bob,
    history_app,
    history_servers,
    people,
    pulsar_client,
)
from tests.integration.history.helpers import EventTap
from tests.integration.session.conftest import ROUTER_SECRET, mailbox, session_app, session_servers  # noqa: F401

if TYPE_CHECKING:
    from parley.chat.v1.chat_pb2_grpc import ChatServiceAsyncStub
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub

KEYSPACE = f"router_test_{secrets.token_hex(4)}"

#: Limits no test runs into unless it means to.
ROOMY = TierLimits(
    turns=BucketSize(capacity=10_000, refill_per_s=100),
    tokens=BucketSize(capacity=100_000_000, refill_per_s=1_000_000),
    tier_turns=BucketSize(capacity=100_000, refill_per_s=1_000),
)


@pytest.fixture(scope="session")
def router_servers(history_servers: LocalStack) -> LocalStack:  # noqa: F811
    history_servers.ensure("triton")
    return history_servers


@pytest.fixture(scope="session", autouse=True)
async def budget_state_ready(router_servers: LocalStack) -> None:
    """Mark the budgets' Redis state ready, or every turn is refused (BUDGET_STATE_UNAVAILABLE).

    In production svc_ledger marks it once it has rebuilt the state from its own tables (its
    tests cover the rebuilding); the router's tests run without the ledger.
    """
    host, port = router_servers.endpoint("redis", "redis")
    redis = Redis.from_url(f"redis://{host}:{port}/0")
    try:
        await BudgetState(redis).mark_ready("router tests")
    finally:
        await redis.aclose()


def router_settings(
    stack: LocalStack, session: SessionApp, history: HistoryApp, **overrides: Any
) -> RouterSettings:
    cql_host, cql_port = stack.endpoint("cassandra-1", "cql")
    redis_host, redis_port = stack.endpoint("redis", "redis")
    triton = stack.stack.table.running("triton")
    assert triton is not None
    pulsar = stack.stack.table.running("pulsar")
    assert pulsar is not None
    llama_port = stack.config.port("llama_http")
    values: dict[str, Any] = {
        "cassandra_hosts": [cql_host],
        "cassandra_port": cql_port,
        # One keyspace for every router of the test run, as replicas share one.
        "keyspace": KEYSPACE,
        "redis_url": f"redis://{redis_host}:{redis_port}/0",
        "pulsar_url": pulsar.endpoints["pulsar"],
        "identity_target": f"{session.settings.internal_host}:{session.internal_port}",
        "service_secret": ROUTER_SECRET,
        "history_target": f"127.0.0.1:{history.port}",
        "triton_target": triton.endpoints["grpc"],
        "openai_endpoints": {"llama": OpenAIEndpoint(base_url=f"http://127.0.0.1:{llama_port}/v1")},
        "metrics_port": -1,
        "shutdown_grace_s": 2,
        "outbox_poll_s": 0.5,
        "outbox_max_backoff_s": 1.0,
        "outbox_send_timeout_s": 3.0,
        "tiers": {"free": ROOMY, "pro": ROOMY},
        "lease_s": 1.5,
        "abandon_grace_s": 1.0,
        "health_interval_s": 1.0,
    }
    values.update(overrides)
    return RouterSettings(**values)


RouterFactory = Callable[..., "Any"]


@pytest.fixture(scope="session")
async def router_app(
    router_servers: LocalStack,
    session_app: SessionApp,  # noqa: F811
    history_app: HistoryApp,  # noqa: F811
) -> AsyncIterator[RouterApp]:
    app = await RouterApp.start(
        router_settings(router_servers, session_app, history_app), key_source=session_app.keys
    )
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture
async def start_router(
    router_servers: LocalStack,
    session_app: SessionApp,  # noqa: F811
    history_app: HistoryApp,  # noqa: F811
) -> AsyncIterator[Callable[..., Any]]:
    """Start more routers (own settings, e.g. a catalog or limits); stopped after the test."""
    started: list[RouterApp] = []

    async def start(**overrides: Any) -> RouterApp:
        app = await RouterApp.start(
            router_settings(router_servers, session_app, history_app, **overrides),
            key_source=session_app.keys,
        )
        started.append(app)
        return app

    try:
        yield start
    finally:
        for app in reversed(started):
            await app.stop()


@pytest.fixture
async def chat(router_app: RouterApp) -> AsyncIterator[ChatServiceAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router_app.port}") as channel:
        yield chat_stub(channel)


@pytest.fixture
async def history(history_app: HistoryApp) -> AsyncIterator[HistoryServiceAsyncStub]:  # noqa: F811
    async with grpc.aio.insecure_channel(f"127.0.0.1:{history_app.port}") as channel:
        yield history_stub(channel)


@pytest.fixture
def usage_tap(pulsar_client: pulsar.Client) -> Iterator[EventTap]:  # noqa: F811
    """TurnCompleted events published from now on."""
    tap = EventTap(pulsar_client, "usage")
    yield tap
    tap.close()


def write_catalog(directory: Path, body: str) -> Path:
    path = directory / "catalog.toml"
    path.write_text(body)
    return path

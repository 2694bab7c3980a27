"""svc_session started in-process against the local stack's real Cassandra and Redis."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from parley_core.stubs import session_stub
from parley_stack.testing import LocalStack
from svc_session.app import SessionApp
from svc_session.settings import BucketSize, SessionSettings

if TYPE_CHECKING:
    from parley.session.v1.session_pb2_grpc import SessionServiceAsyncStub

ADMIN_EMAIL = "root@parley.test"


@pytest.fixture(scope="session")
def session_servers(local_stack: LocalStack) -> LocalStack:
    local_stack.ensure("cassandra", "redis")
    return local_stack


@pytest.fixture(scope="session")
def mailbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mailbox")


def session_settings(stack: LocalStack, mailbox: Path, **overrides: object) -> SessionSettings:
    cql_host, cql_port = stack.endpoint("cassandra-1", "cql")
    redis_host, redis_port = stack.endpoint("redis", "redis")
    values: dict[str, object] = {
        "cassandra_hosts": [cql_host],
        "cassandra_port": cql_port,
        # A keyspace of this test run's own, so a reused stack keeps its data apart.
        "keyspace": f"parley_test_{secrets.token_hex(4)}",
        "redis_url": f"redis://{redis_host}:{redis_port}/0",
        "dev_mailbox_dir": mailbox,
        "admin_emails": [ADMIN_EMAIL],
        "metrics_port": -1,
        "shutdown_grace_s": 1,
        # Every test client connects from 127.0.0.1, and one test registers one email twenty
        # times at once: the sign-in buckets must not be what a test runs into, unless it is
        # the point of the test (test_password_guessing... runs the production defaults).
        "auth_address_bucket": BucketSize(capacity=10_000, refill_per_s=100),
        "auth_email_bucket": BucketSize(capacity=100, refill_per_s=10),
    }
    values.update(overrides)
    return SessionSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
async def session_app(session_servers: LocalStack, mailbox: Path) -> AsyncIterator[SessionApp]:
    app = await SessionApp.start(session_settings(session_servers, mailbox))
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture
async def channel(session_app: SessionApp) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{session_app.port}") as opened:
        yield opened


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> SessionServiceAsyncStub:
    return session_stub(channel)


@pytest.fixture
def email() -> str:
    return f"user-{secrets.token_hex(6)}@parley.test"

"""svc_session started in-process against the local stack's real Cassandra and Redis."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from parley.session.v1 import session_pb2 as pb
from parley_core.stubs import session_stub
from parley_stack.testing import LocalStack
from svc_session.app import SessionApp
from svc_session.keys import KeyEncryptionKey
from svc_session.settings import BucketSize, SessionSettings
from tests.integration.session.helpers import PASSWORD, register_verified

if TYPE_CHECKING:
    from parley.session.v1.session_pb2_grpc import SessionServiceAsyncStub

ADMIN_EMAIL = "root@parley.test"
#: One key-encryption key for the test run: every SessionApp on a keyspace shares it.
TEST_KEK = KeyEncryptionKey.generate()
REFRESH_GRACE_S = 1
#: svc_router's service credential in tests.
ROUTER_SECRET = KeyEncryptionKey.generate()


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
        "key_encryption_key": TEST_KEK,
        "service_credentials": {"svc_router": hashlib.sha256(ROUTER_SECRET.encode()).hexdigest()},
        # Mail is sent by the relay at once when this process queues it; the poll is for
        # other replicas' mail.
        "mail_poll_s": 0.5,
        # A retried refresh within a second gets the same credentials; tests of reuse wait
        # that second out.
        "refresh_reuse_grace_s": REFRESH_GRACE_S,
        "metrics_port": -1,
        "shutdown_grace_s": 1,
        # Every test client connects from 127.0.0.1, and one test registers one email twenty
        # times at once: the sign-in buckets must not be what a test runs into, unless it is
        # the point of the test (test_password_guessing... runs the production defaults).
        "auth_address_bucket": BucketSize(capacity=10_000, refill_per_s=100),
        "auth_email_address_bucket": BucketSize(capacity=100, refill_per_s=10),
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


@pytest.fixture(scope="session")
async def admin_token(session_app: SessionApp, mailbox: Path) -> str:
    """An admin's access token: registered, verified, then granted out of band."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{session_app.port}") as opened:
        stub = session_stub(opened)
        await register_verified(stub, mailbox, ADMIN_EMAIL)
        await session_app.accounts.grant_admin(ADMIN_EMAIL)
        login = await stub.Login(
            pb.LoginRequest(password=pb.PasswordCredential(email=ADMIN_EMAIL, password=PASSWORD))
        )
    return login.credentials.access_token

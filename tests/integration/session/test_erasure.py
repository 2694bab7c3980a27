"""Erasure: a UserDeleted event removes every row svc_session holds of the user."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pulsar
import pytest

from parley.events.v1 import events_pb2
from parley.session.v1 import session_pb2 as pb
from parley_core.cassandra import execute
from parley_core.events import USER_DELETED, topic_url
from parley_core.stubs import session_stub
from parley_stack.testing import LocalStack
from svc_session.app import SessionApp
from tests.integration.session.conftest import session_settings
from tests.integration.session.helpers import PASSWORD, bearer, failure, reason, register_verified

if TYPE_CHECKING:
    from parley.session.v1.session_pb2_grpc import SessionServiceAsyncStub

pytestmark = pytest.mark.integration


@pytest.fixture
async def erasing_app(session_servers: LocalStack, mailbox: Path) -> AsyncIterator[SessionApp]:
    session_servers.ensure("pulsar")
    running = session_servers.stack.table.running("pulsar")
    assert running is not None
    url = running.endpoints["pulsar"]  # pulsar://host:port
    app = await SessionApp.start(session_settings(session_servers, mailbox, pulsar_url=url))
    try:
        yield app
    finally:
        await app.stop()


def _publish(url: str, user_id: str) -> None:
    client = pulsar.Client(
        url, operation_timeout_seconds=10, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error)
    )
    try:
        producer = client.create_producer(topic_url(USER_DELETED))
        event = events_pb2.UserDeleted(event_id=str(uuid.uuid4()), user=f"users/{user_id}")
        event.event_time.FromDatetime(datetime.now(UTC))
        producer.send(event.SerializeToString(), partition_key=user_id)
    finally:
        client.close()


async def _rows_naming(app: SessionApp, *needles: str) -> list[str]:
    """Every row of every table in the app's keyspace that holds one of needles."""
    keyspace = app.settings.keyspace
    tables = await execute(
        app.cql, "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,)
    )
    found = []
    for table in tables:
        for row in await execute(app.cql, f"SELECT * FROM {keyspace}.{table.table_name}"):
            text = " ".join(str(value) for value in row)
            if any(needle in text for needle in needles):
                found.append(f"{table.table_name}: {text[:120]}")
    return found


async def test_a_user_deleted_event_erases_every_row_of_the_account(
    erasing_app: SessionApp, email: str, mailbox: Path
) -> None:
    app = erasing_app
    assert app.settings.pulsar_url is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub: SessionServiceAsyncStub = session_stub(channel)
        registered = await register_verified(stub, mailbox, email)
        user_id = registered.user.name.removeprefix("users/")
        auth = bearer(registered.credentials.access_token)
        await stub.CreateApiKey(
            pb.CreateApiKeyRequest(parent="users/me", api_key=pb.ApiKey(display_name="k", scopes=["chat"])),
            metadata=auth,
        )
        await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=registered.credentials.refresh_token))
        await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email=email))
        assert await _rows_naming(app, user_id, email)

        await asyncio.to_thread(_publish, app.settings.pulsar_url, user_id)
        deadline = time.monotonic() + 30
        while remaining := await _rows_naming(app, user_id, email):
            assert time.monotonic() < deadline, remaining
            await asyncio.sleep(0.3)

        ended = await failure(stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=auth))
        assert reason(ended) == "SESSION_REVOKED"
        login = pb.LoginRequest(password=pb.PasswordCredential(email=email, password=PASSWORD))
        assert reason(await failure(stub.Login(login))) == "INVALID_CREDENTIALS"
        # The same event again changes nothing and breaks nothing; the address is free.
        await asyncio.to_thread(_publish, app.settings.pulsar_url, user_id)
        again = await stub.Register(pb.RegisterRequest(email=email, password=PASSWORD, display_name="New"))
        assert again.user.name != registered.user.name

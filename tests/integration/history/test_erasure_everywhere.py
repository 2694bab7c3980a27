"""DeleteUserData end to end: history erases its rows and announces UserDeleted; svc_session
receives it and erases the account. Afterwards no table of either keyspace holds a row of
the user, and the user's tokens are over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from parley.history.v1 import history_pb2 as pb
from parley.session.v1 import session_pb2
from parley_core.cassandra import execute
from parley_core.stubs import history_stub, session_stub
from parley_stack.testing import LocalStack
from svc_history.app import HistoryApp
from svc_session.app import SessionApp
from tests.integration.history.conftest import history_settings, pulsar_url
from tests.integration.history.helpers import Person, new_person
from tests.integration.history.test_user_data import _needles, _populate
from tests.integration.session.conftest import session_settings
from tests.integration.session.helpers import failure, reason

pytestmark = pytest.mark.integration


@pytest.fixture
async def apps(history_servers: LocalStack, mailbox: Path) -> AsyncIterator[tuple[SessionApp, HistoryApp]]:
    """svc_session following user-deleted, and svc_history using its tokens."""
    session = await SessionApp.start(
        session_settings(history_servers, mailbox, pulsar_url=pulsar_url(history_servers))
    )
    history = await HistoryApp.start(history_settings(history_servers), key_source=session.keys)
    try:
        yield session, history
    finally:
        await history.stop()
        await session.stop()


async def _rows_naming(cql: Any, keyspace: str, needles: set[str]) -> list[str]:
    tables = await execute(
        cql, "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,)
    )
    found = []
    for table in tables:
        rows = await execute(cql, f"SELECT * FROM {keyspace}.{table.table_name}")
        found += [
            f"{keyspace}.{table.table_name}" for row in rows if any(n in str(tuple(row)) for n in needles)
        ]
    return found


async def test_after_delete_user_data_no_keyspace_holds_a_row_of_the_user(
    apps: tuple[SessionApp, HistoryApp], mailbox: Path
) -> None:
    session_app, history_app = apps
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{session_app.port}") as session_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{history_app.port}") as history_channel,
    ):
        sessions, history = session_stub(session_channel), history_stub(history_channel)
        person: Person = await new_person(session_app, sessions, mailbox)
        me = await sessions.GetCurrentUser(session_pb2.GetCurrentUserRequest(), metadata=person.md)
        needles = _needles(person, await _populate(history, person)) | {me.user.email}
        places = [
            (session_app.cql, session_app.settings.keyspace),
            (history_app.cql, history_app.settings.keyspace),
        ]
        assert all([await _rows_naming(cql, keyspace, needles) for cql, keyspace in places])

        receipt = await history.DeleteUserData(
            pb.DeleteUserDataRequest(name="users/me", confirm="users/me"), metadata=person.md
        )

        deadline = time.monotonic() + 60
        while left := [row for cql, keyspace in places for row in await _rows_naming(cql, keyspace, needles)]:
            assert time.monotonic() < deadline, f"rows of the user remain: {sorted(set(left))}"
            await asyncio.sleep(0.5)
        assert receipt.event_id
        ended = await failure(
            sessions.GetCurrentUser(session_pb2.GetCurrentUserRequest(), metadata=person.md)
        )
        assert reason(ended) == "SESSION_REVOKED"

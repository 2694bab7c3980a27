"""`python -m svc_history migrate` brings a keyspace to the code's schema, once."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys

import pytest

from parley_core.cassandra import execute
from parley_stack.config import REPO_ROOT
from parley_stack.testing import LocalStack
from svc_history.app import HistoryApp
from svc_history.store import MIGRATIONS
from tests.integration.history.conftest import PAGE_TOKEN_KEY

pytestmark = pytest.mark.integration


async def _migrate(stack: LocalStack, keyspace: str) -> tuple[int, str]:
    host, port = stack.endpoint("cassandra-1", "cql")
    env = {
        **os.environ,
        "PARLEY_HISTORY_CASSANDRA_HOSTS": f'["{host}"]',
        "PARLEY_HISTORY_CASSANDRA_PORT": str(port),
        "PARLEY_HISTORY_KEYSPACE": keyspace,
        "PARLEY_HISTORY_PAGE_TOKEN_KEY": PAGE_TOKEN_KEY,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "svc_history", "migrate",
        cwd=REPO_ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_migrate_applies_the_schema_once(history_servers: LocalStack, history_app: HistoryApp) -> None:
    keyspace = f"history_migrate_{secrets.token_hex(4)}"

    first = await asyncio.gather(_migrate(history_servers, keyspace), _migrate(history_servers, keyspace))
    again = await _migrate(history_servers, keyspace)

    assert [code for code, _ in first] == [0, 0]
    assert again[0] == 0
    rows = await execute(history_app.cql, f"SELECT version FROM {keyspace}.schema_migrations")
    assert sorted(row.version for row in rows) == [m.version for m in MIGRATIONS]
    tables = await execute(
        history_app.cql, "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,)
    )
    assert {"conversations", "messages", "message_tree", "share_links", "event_outbox"} <= {
        row.table_name for row in tables
    }
    await execute(history_app.cql, f"DROP KEYSPACE {keyspace}")

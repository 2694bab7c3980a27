"""parley_core.cassandra on the real server: `execute` returns one page, `execute_all` every page."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from cassandra.cluster import Session
from cassandra.query import SimpleStatement

from parley_core.cassandra import connect, create_keyspace, execute, execute_all
from parley_stack.testing import LocalStack


@pytest.fixture(scope="module")
def session(local_stack: LocalStack) -> Iterator[Session]:
    local_stack.ensure("cassandra")
    host, port = local_stack.endpoint("cassandra-1", "cql")
    cluster, opened = connect([host], port)
    keyspace = f"test_pages_{secrets.token_hex(4)}"
    create_keyspace(opened, keyspace, 1)
    opened.execute(f"CREATE TABLE {keyspace}.rows (p int, c int, PRIMARY KEY ((p), c))")
    for c in range(25):
        opened.execute(f"INSERT INTO {keyspace}.rows (p, c) VALUES (1, %s)", (c,))
    opened.set_keyspace(keyspace)
    try:
        yield opened
    finally:
        opened.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        cluster.shutdown()


async def test_execute_all_reads_every_page_and_execute_the_first(session: Session) -> None:
    def query() -> SimpleStatement:
        return SimpleStatement("SELECT c FROM rows WHERE p = 1", fetch_size=10)

    assert [row.c for row in await execute(session, query())] == list(range(10))
    assert [row.c for row in await execute_all(session, query())] == list(range(25))
    # A result that fits one page, and one that is empty.
    assert len(await execute_all(session, SimpleStatement("SELECT c FROM rows WHERE p = 1"))) == 25
    assert await execute_all(session, SimpleStatement("SELECT c FROM rows WHERE p = 2", fetch_size=10)) == []

"""Versioned migrations against the local stack's real Cassandra.

Each test works in a keyspace of its own. Several instances starting at once are
separate driver clusters (as separate processes would be) migrating concurrently.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import pytest
from cassandra.cluster import Cluster, Session

from parley_core.cassandra import connect, execute
from parley_core.migrations import Migration, MigrationError, migrate
from parley_stack.testing import LocalStack

pytestmark = pytest.mark.integration

RF = 1

NOTES = Migration(1, "notes", ("CREATE TABLE IF NOT EXISTS {ks}.notes (id int PRIMARY KEY, body text)",))
NOTES_TITLE = Migration(2, "notes get a title", ("ALTER TABLE {ks}.notes ADD title text",))
FIRST_NOTE = Migration(
    3, "the first note", ("INSERT INTO {ks}.notes (id, body, title) VALUES (1, 'hello', 'welcome')",)
)


@pytest.fixture(scope="module")
def cql_address(local_stack: LocalStack) -> tuple[str, int]:
    local_stack.ensure("cassandra")
    return local_stack.endpoint("cassandra-1", "cql")


@pytest.fixture(scope="module")
def session(cql_address: tuple[str, int]) -> Iterator[Session]:
    cluster, session = connect([cql_address[0]], cql_address[1])
    try:
        yield session
    finally:
        cluster.shutdown()


@pytest.fixture
def keyspace(session: Session) -> Iterator[str]:
    name = f"test_migrations_{secrets.token_hex(4)}"
    try:
        yield name
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {name}")


async def _recorded(session: Session, keyspace: str) -> dict[int, str]:
    rows = await execute(session, f"SELECT version, description FROM {keyspace}.schema_migrations")
    return {row.version: row.description for row in rows}


async def test_applies_missing_migrations_in_version_order(session: Session, keyspace: str) -> None:
    # Listed out of order: the ALTER needs the table, the INSERT needs the column.
    applied = await migrate(session, keyspace, RF, [FIRST_NOTE, NOTES, NOTES_TITLE])

    assert applied == [1, 2, 3]
    assert await _recorded(session, keyspace) == {1: "notes", 2: "notes get a title", 3: "the first note"}
    rows = await execute(session, f"SELECT id, body, title FROM {keyspace}.notes")
    assert [(r.id, r.body, r.title) for r in rows] == [(1, "hello", "welcome")]


async def test_records_checksum_time_and_owner(session: Session, keyspace: str) -> None:
    await migrate(session, keyspace, RF, [NOTES], owner="test-host:42")

    rows = await execute(
        session,
        f"SELECT checksum, applied_at, applied_by FROM {keyspace}.schema_migrations WHERE version = 1",
    )
    assert rows[0].checksum == NOTES.checksum
    assert rows[0].applied_at is not None
    assert rows[0].applied_by.startswith("test-host:42/")


async def test_keyspace_uses_network_topology_strategy(session: Session, keyspace: str) -> None:
    await migrate(session, keyspace, RF, [NOTES])

    rows = await execute(
        session, "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
    )
    assert rows[0].replication == {
        "class": "org.apache.cassandra.locator.NetworkTopologyStrategy",
        "datacenter1": str(RF),
    }


async def test_second_run_applies_nothing_and_a_later_one_only_the_new_version(
    session: Session, keyspace: str
) -> None:
    first = await migrate(session, keyspace, RF, [NOTES, NOTES_TITLE])
    second = await migrate(session, keyspace, RF, [NOTES, NOTES_TITLE])
    third = await migrate(session, keyspace, RF, [NOTES, NOTES_TITLE, FIRST_NOTE])

    assert (first, second, third) == ([1, 2], [], [3])


async def test_concurrent_instances_apply_each_version_exactly_once(
    cql_address: tuple[str, int], session: Session, keyspace: str
) -> None:
    # Counter increments are not idempotent: a version applied twice counts 2.
    migrations = [
        Migration(1, "tally", ("CREATE TABLE {ks}.tally (name text PRIMARY KEY, runs counter)",)),
        Migration(2, "count 2", ("UPDATE {ks}.tally SET runs = runs + 1 WHERE name = 'v2'",)),
        Migration(3, "notes", NOTES.statements),
        Migration(4, "count 4", ("UPDATE {ks}.tally SET runs = runs + 1 WHERE name = 'v4'",)),
    ]
    instances: list[tuple[Cluster, Session]] = await asyncio.gather(
        *(asyncio.to_thread(connect, [cql_address[0]], cql_address[1]) for _ in range(5))
    )
    try:
        results = await asyncio.gather(
            *(
                migrate(own, keyspace, RF, migrations, owner=f"instance-{i}", poll_s=0.1)
                for i, (_, own) in enumerate(instances)
            )
        )
    finally:
        await asyncio.gather(*(asyncio.to_thread(cluster.shutdown) for cluster, _ in instances))

    assert sorted(v for applied in results for v in applied) == [1, 2, 3, 4]
    rows = await execute(session, f"SELECT name, runs FROM {keyspace}.tally")
    assert {r.name: r.runs for r in rows} == {"v2": 1, "v4": 1}
    assert sorted(await _recorded(session, keyspace)) == [1, 2, 3, 4]


async def test_an_edited_applied_migration_is_refused(session: Session, keyspace: str) -> None:
    await migrate(session, keyspace, RF, [NOTES])
    edited = Migration(1, "notes", ("CREATE TABLE IF NOT EXISTS {ks}.notes (id int PRIMARY KEY, text text)",))

    with pytest.raises(MigrationError, match="migration 1 \\(notes\\) was edited after it was applied"):
        await migrate(session, keyspace, RF, [edited, NOTES_TITLE])

    assert sorted(await _recorded(session, keyspace)) == [1]  # and 2 was not applied either


async def test_whitespace_changes_are_not_edits(session: Session, keyspace: str) -> None:
    await migrate(session, keyspace, RF, [NOTES])
    reformatted = Migration(
        1, "notes", ("CREATE TABLE IF NOT EXISTS {ks}.notes (\n    id int PRIMARY KEY,\n    body text\n)",)
    )

    assert await migrate(session, keyspace, RF, [reformatted]) == []


async def test_a_failing_statement_leaves_its_version_unrecorded_and_a_fixed_rerun_applies_it(
    session: Session, keyspace: str
) -> None:
    broken = Migration(
        2,
        "notes get a title",
        (
            "CREATE TABLE IF NOT EXISTS {ks}.authors (id int PRIMARY KEY)",
            "ALTER TABLE {ks}.no_such_table ADD title text",
        ),
    )
    fixed = Migration(
        2,
        "notes get a title",
        (
            "CREATE TABLE IF NOT EXISTS {ks}.authors (id int PRIMARY KEY)",
            "ALTER TABLE {ks}.notes ADD title text",
        ),
    )

    with pytest.raises(MigrationError, match="migration 2 \\(notes get a title\\), statement 2 failed"):
        await migrate(session, keyspace, RF, [NOTES, broken])
    assert sorted(await _recorded(session, keyspace)) == [1]
    # The lease was given back: the rerun does not wait for it to expire.
    assert await execute(session, f"SELECT owner FROM {keyspace}.schema_migrations_lease") == []

    assert await migrate(session, keyspace, RF, [NOTES, fixed], wait_s=1) == [2]
    assert sorted(await _recorded(session, keyspace)) == [1, 2]


async def test_the_lease_of_a_crashed_instance_expires_and_another_migrates(
    session: Session, keyspace: str
) -> None:
    await migrate(session, keyspace, RF, [NOTES])
    # An instance that took the lease and died: nobody renews or releases it.
    await execute(
        session,
        f"INSERT INTO {keyspace}.schema_migrations_lease (name, owner) VALUES ('schema', 'dead:1/x') "
        "IF NOT EXISTS USING TTL 2",
    )

    assert await migrate(session, keyspace, RF, [NOTES, NOTES_TITLE], poll_s=0.2, wait_s=30) == [2]


async def test_waiting_longer_than_wait_s_for_the_lease_is_an_error(session: Session, keyspace: str) -> None:
    await migrate(session, keyspace, RF, [NOTES])
    await execute(
        session,
        f"INSERT INTO {keyspace}.schema_migrations_lease (name, owner) VALUES ('schema', 'busy:1/x') "
        "IF NOT EXISTS USING TTL 60",
    )

    with pytest.raises(MigrationError, match="another instance held the migration lease"):
        await migrate(session, keyspace, RF, [NOTES, NOTES_TITLE], poll_s=0.1, wait_s=0.5)


async def test_a_migration_longer_than_the_lease_keeps_it_by_renewing(
    session: Session, keyspace: str
) -> None:
    # Forty tables take seconds: the 2 s lease (owner and all) must be renewed, or the run
    # stops with "lost the migration lease".
    tables = tuple(f"CREATE TABLE IF NOT EXISTS {{ks}}.t{i} (id int PRIMARY KEY)" for i in range(40))
    started = asyncio.get_running_loop().time()

    assert await migrate(session, keyspace, RF, [Migration(1, "many tables", tables)], lease_s=2) == [1]
    assert asyncio.get_running_loop().time() - started > 2  # it did outlive one lease

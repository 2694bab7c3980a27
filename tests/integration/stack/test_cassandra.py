"""Cassandra from the local stack, through the DataStax Python driver.

One test uses the session's single node; the others run a three-node ring of their own (on
127.0.0.1-3, at another port offset so it never meets the session's stack or a developer's)
and stop nodes to show what QUORUM does and does not survive.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from cassandra import ConsistencyLevel, OperationTimedOut, Unavailable
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, Session
from cassandra.policies import DCAwareRoundRobinPolicy, FallthroughRetryPolicy, TokenAwarePolicy
from cassandra.pool import Host

from parley_stack.config import StackConfig
from parley_stack.testing import LocalStack, side_stack_offset

pytestmark = pytest.mark.integration

#: The ring runs in its own window of ports beside the test session's stack.
RING_PORT_OFFSET = side_stack_offset(1)


@contextmanager
def _session(host: str, port: int) -> Iterator[Session]:
    """A driver session whose statements run at QUORUM.

    Fallthrough retries: the default policy retries an Unavailable on the next host and, with
    only one node left, turns it into NoHostAvailable; a test wants the server's own answer.
    """
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc="datacenter1")),
        retry_policy=FallthroughRetryPolicy(),
        consistency_level=ConsistencyLevel.QUORUM,
        request_timeout=20,
    )
    # DDL waits (up to a minute on a loaded machine) until every node reports its schema.
    cluster = Cluster(
        [host],
        port=port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        max_schema_agreement_wait=60,
    )
    try:
        yield cluster.connect()
    finally:
        cluster.shutdown()


def _create_table(session: Session, keyspace: str, replication_factor: int) -> None:
    for ddl in (
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
        f"{{'class': 'NetworkTopologyStrategy', 'datacenter1': {replication_factor}}}",
        f"CREATE TABLE IF NOT EXISTS {keyspace}.kv (k text PRIMARY KEY, v text)",
    ):
        result = session.execute(ddl)
        assert result.response_future.is_schema_agreed, f"the nodes never agreed on the schema after {ddl}"


def _put(session: Session, keyspace: str, key: str, value: str) -> None:
    session.execute(f"INSERT INTO {keyspace}.kv (k, v) VALUES (%s, %s)", (key, value))


def _get(session: Session, keyspace: str, key: str) -> str | None:
    row = session.execute(f"SELECT v FROM {keyspace}.kv WHERE k = %s", (key,)).one()
    return None if row is None else str(row.v)


def test_quorum_write_is_read_back_on_one_node(local_stack: LocalStack) -> None:
    local_stack.ensure("cassandra")
    host, port = local_stack.endpoint("cassandra-1", "cql")
    key = uuid.uuid4().hex
    with _session(host, port) as session:
        _create_table(session, "stack_test_single", replication_factor=1)
        _put(session, "stack_test_single", key, "hello")

        assert _get(session, "stack_test_single", key) == "hello"


def _ring_view(session: Session, host: Host) -> tuple[int, set[object]]:
    """What one node itself knows: how many peers it holds as ring members (a peer row gets its
    tokens when the peer turns NORMAL there) and the schema versions it and they report."""
    local = session.execute("SELECT schema_version FROM system.local", host=host).one()
    peers = list(session.execute("SELECT peer, schema_version, tokens FROM system.peers", host=host))
    members = [p for p in peers if p.tokens]
    return len(members), {local.schema_version, *(p.schema_version for p in peers)}


def _wait_for_ring(stack: LocalStack, nodes: int, timeout_s: float = 180.0) -> None:
    """Until every node sees the others as members and all report one schema version.

    Each node is ready on its own before gossip has joined them (slowly, on a busy machine).
    Asking node 1 alone is not enough: DDL coordinated by a node that has not yet taken in
    the others is planned for a ring of one ("replication factor 3 ... higher than the number
    of nodes 1"), and a node that lags on schema answers "keyspace doesn't exist".
    """
    host, port = stack.endpoint("cassandra-1", "cql")
    deadline = time.monotonic() + timeout_s
    with _session(host, port) as session:
        while True:
            up = [h for h in session.cluster.metadata.all_hosts() if h.is_up]
            try:
                views = [_ring_view(session, h) for h in up] if len(up) == nodes else []
            except (NoHostAvailable, OperationTimedOut) as error:
                # A node the driver saw up a moment ago flapped while gossip settles.
                views = [(-1, {repr(error)})]
            versions = set().union(*(v for _, v in views)) if views else set()
            if views and all(members == nodes - 1 for members, _ in views) and len(versions) == 1:
                return
            assert time.monotonic() < deadline, f"the ring never formed: {len(up)} up, views {views}"
            time.sleep(1.0)


@pytest.fixture(scope="module")
def ring() -> Iterator[LocalStack]:
    """Three Cassandra nodes, stopped (all of them) when the module's tests are done."""
    config = StackConfig(port_offset=RING_PORT_OFFSET, cassandra_nodes=3, ports={})
    handle = LocalStack(config, reuse=False)
    try:
        handle.ensure("cassandra")
        _wait_for_ring(handle, 3)
        yield handle
    finally:
        handle.close()


def test_quorum_survives_one_node_down(ring: LocalStack) -> None:
    ring.ensure("cassandra")  # restarts nodes an earlier test stopped
    _wait_for_ring(ring, 3)
    host, port = ring.endpoint("cassandra-1", "cql")
    before, during = uuid.uuid4().hex, uuid.uuid4().hex
    with _session(host, port) as session:
        _create_table(session, "stack_test_ring", replication_factor=3)
        _put(session, "stack_test_ring", before, "written by three")

        assert ring.stack.table.stop("cassandra-3")
        _put(session, "stack_test_ring", during, "written by two")

        assert _get(session, "stack_test_ring", before) == "written by three"
        assert _get(session, "stack_test_ring", during) == "written by two"


def test_quorum_is_unavailable_with_two_nodes_down(ring: LocalStack) -> None:
    host, port = ring.endpoint("cassandra-1", "cql")
    with _session(host, port) as session:
        _create_table(session, "stack_test_ring", replication_factor=3)
        ring.stack.table.stop("cassandra-3")  # already stopped when the test above ran first
        assert ring.stack.table.stop("cassandra-2")

        with pytest.raises(Unavailable) as raised:
            _put(session, "stack_test_ring", uuid.uuid4().hex, "too few replicas")

    assert raised.value.consistency == ConsistencyLevel.QUORUM
    assert (raised.value.required_replicas, raised.value.alive_replicas) == (2, 1)
    assert "QUORUM" in str(raised.value)

"""Services sign in to a Cassandra that authenticates and names its data centre, as
cass-operator's datacenters do.

One node of its own (a side stack in slot 7, PasswordAuthenticator, Cassandra's default
superuser cassandra/cassandra, data centre `parley-east`), started once for the module: the
session's stack keeps running without authentication in `datacenter1`, as the default
local stack does.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest
from cassandra import AuthenticationFailed
from cassandra.cluster import NoHostAvailable, Session
from pydantic import SecretStr

from parley_core.cassandra import connect, connect_to, local_datacenter
from parley_core.settings import CassandraSettings
from parley_stack.config import REPO_ROOT, StackConfig
from parley_stack.servers.cassandra import SUPERUSER, SUPERUSER_PASSWORD, VERSION
from parley_stack.testing import LocalStack, side_stack_offset
from svc_history.settings import HistorySettings
from svc_ledger.settings import LedgerSettings
from svc_router.events import MIGRATIONS as ROUTER_MIGRATIONS
from svc_router.settings import RouterSettings
from svc_session.settings import SessionSettings

pytestmark = pytest.mark.integration

#: The side stack's slot (1-5 are other tests' rings and brokers).
SLOT = 7
#: What the side stack's node calls its data centre (production's is the region's name).
DATA_CENTRE = "parley-east"


@pytest.fixture(scope="module")
def cql_address() -> Iterator[tuple[str, int]]:
    """host, port of a one-node Cassandra that asks every client to sign in."""
    config = StackConfig(cassandra_auth=True, cassandra_dc=DATA_CENTRE, port_offset=side_stack_offset(SLOT))
    handle = LocalStack(config, reuse=False)
    try:
        handle.ensure("cassandra")
        yield handle.endpoint("cassandra-1", "cql")
    finally:
        handle.close()


@pytest.fixture(scope="module")
def superuser(cql_address: tuple[str, int]) -> Iterator[Session]:
    host, port = cql_address
    cluster, session = connect([host], port, username=SUPERUSER, password=SUPERUSER_PASSWORD)
    try:
        yield session
    finally:
        cluster.shutdown()


def _refusals(error: NoHostAvailable) -> list[type[BaseException]]:
    """The error each host gave (the driver raises NoHostAvailable with one per host)."""
    return [type(cause) for cause in error.errors.values()]


def test_the_right_credentials_sign_in_and_run_a_query(superuser: Session) -> None:
    row = superuser.execute("SELECT release_version FROM system.local").one()

    assert row.release_version == VERSION


def test_a_wrong_password_is_refused(cql_address: tuple[str, int]) -> None:
    with pytest.raises(NoHostAvailable) as refused:
        connect([cql_address[0]], cql_address[1], username=SUPERUSER, password="not-" + SUPERUSER_PASSWORD)

    assert _refusals(refused.value) == [AuthenticationFailed]


def test_no_credentials_are_refused(cql_address: tuple[str, int]) -> None:
    with pytest.raises(NoHostAvailable) as refused:
        connect([cql_address[0]], cql_address[1])

    assert _refusals(refused.value) == [AuthenticationFailed]


@pytest.mark.parametrize(
    ("settings_class", "prefix"),
    [
        (SessionSettings, "PARLEY_SESSION_"),
        (HistorySettings, "PARLEY_HISTORY_"),  # the API and the search indexer
        (RouterSettings, "PARLEY_ROUTER_"),
        (LedgerSettings, "PARLEY_LEDGER_"),
    ],
)
def test_each_service_signs_in_with_the_credentials_in_its_environment(
    cql_address: tuple[str, int],
    monkeypatch: pytest.MonkeyPatch,
    settings_class: type[CassandraSettings],
    prefix: str,
) -> None:
    # The variables k8s/base/svc-*.yaml fill from the Cassandra credentials Secret.
    monkeypatch.setenv(f"{prefix}CASSANDRA_HOSTS", f'["{cql_address[0]}"]')
    monkeypatch.setenv(f"{prefix}CASSANDRA_PORT", str(cql_address[1]))
    monkeypatch.setenv(f"{prefix}CASSANDRA_USERNAME", SUPERUSER)
    monkeypatch.setenv(f"{prefix}CASSANDRA_PASSWORD", SUPERUSER_PASSWORD)

    cluster, session = connect_to(settings_class())
    try:
        row = session.execute("SELECT release_version FROM system.local").one()
    finally:
        cluster.shutdown()

    assert row.release_version == VERSION


def _migrate(cql_address: tuple[str, int], keyspace: str, password: str) -> subprocess.CompletedProcess[str]:
    """`python -m svc_router migrate` (what a deploy step runs) with its settings in its environment."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("PARLEY_ROUTER_")}
    environment |= {
        "PARLEY_ROUTER_CASSANDRA_HOSTS": f'["{cql_address[0]}"]',
        "PARLEY_ROUTER_CASSANDRA_PORT": str(cql_address[1]),
        "PARLEY_ROUTER_CASSANDRA_USERNAME": SUPERUSER,
        "PARLEY_ROUTER_CASSANDRA_PASSWORD": password,
        "PARLEY_ROUTER_KEYSPACE": keyspace,
        "PARLEY_ROUTER_LOG_FORMAT": "json",
    }
    return subprocess.run(
        [sys.executable, "-m", "svc_router", "migrate"],
        env=environment,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture
def keyspace(superuser: Session) -> Iterator[str]:
    name = f"test_auth_{secrets.token_hex(4)}"
    try:
        yield name
    finally:
        superuser.execute(f"DROP KEYSPACE IF EXISTS {name}")


def test_the_migrate_command_signs_in_with_the_credentials_in_its_environment(
    cql_address: tuple[str, int], superuser: Session, keyspace: str
) -> None:
    migrated = _migrate(cql_address, keyspace, SUPERUSER_PASSWORD)

    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    recorded = superuser.execute(f"SELECT version FROM {keyspace}.schema_migrations")
    assert sorted(row.version for row in recorded) == sorted(m.version for m in ROUTER_MIGRATIONS)
    # Its replicas are in the data centre the node names, not a name configured elsewhere:
    # with another name, LOCAL_QUORUM would find no replica and every write would fail.
    created = superuser.execute(
        "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
    ).one()
    assert dict(created.replication) == {
        "class": "org.apache.cassandra.locator.NetworkTopologyStrategy",
        DATA_CENTRE: "1",
    }


def test_the_data_centre_is_the_contact_points_unless_named(cql_address: tuple[str, int]) -> None:
    host, port = cql_address
    named = connect([host], port, username=SUPERUSER, password=SUPERUSER_PASSWORD, local_dc=DATA_CENTRE)
    inferred = connect([host], port, username=SUPERUSER, password=SUPERUSER_PASSWORD)
    try:
        for _cluster, session in (named, inferred):
            assert local_datacenter(session) == DATA_CENTRE
            assert session.execute("SELECT now() FROM system.local").one() is not None
    finally:
        named[0].shutdown()
        inferred[0].shutdown()
    # A data centre the cluster does not have leaves no node to ask: refused at connect,
    # not at the first write.
    with pytest.raises(NoHostAvailable):
        connect([host], port, username=SUPERUSER, password=SUPERUSER_PASSWORD, local_dc="datacenter1")


def test_the_migrate_command_fails_on_a_wrong_password_and_creates_nothing(
    cql_address: tuple[str, int], superuser: Session, keyspace: str
) -> None:
    migrated = _migrate(cql_address, keyspace, "not-" + SUPERUSER_PASSWORD)

    assert migrated.returncode == 1
    assert "Cassandra unreachable" in migrated.stdout + migrated.stderr
    assert "AuthenticationFailed" in migrated.stdout + migrated.stderr
    assert "not-" + SUPERUSER_PASSWORD not in migrated.stdout + migrated.stderr
    created = superuser.execute(
        "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
    )
    assert created.one() is None


@pytest.mark.parametrize(
    "half",
    [{"cassandra_username": SUPERUSER}, {"cassandra_password": SecretStr("a-password-without-its-user")}],
    ids=["username-only", "password-only"],
)
def test_half_a_pair_of_credentials_is_refused_before_connecting(half: dict[str, object]) -> None:
    settings = RouterSettings.model_validate(half)

    with pytest.raises(ValueError, match="set both cassandra_username and cassandra_password") as refused:
        connect_to(settings)

    assert "a-password-without-its-user" not in str(refused.value)

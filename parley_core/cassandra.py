"""Cassandra wiring every service shares: a session at LOCAL_QUORUM, signed in as the
service's role where the cluster authenticates, awaitable queries, and a metric and a
trace span of each request.

The DataStax driver's I/O runs on its own event-loop thread; `execute` bridges its
ResponseFuture to an asyncio future, so no query ever blocks the service's loop.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Sequence
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, ResponseFuture, Session
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import BatchStatement, BoundStatement, PreparedStatement, SimpleStatement, Statement
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Histogram

from parley_core.settings import CassandraSettings

__all__ = [
    "connect",
    "connect_to",
    "create_keyspace",
    "describe_statement",
    "execute",
    "execute_all",
    "execute_lwt",
    "local_datacenter",
    "observe_requests",
    "replication",
]


def connect(
    hosts: Sequence[str],
    port: int,
    *,
    username: str = "",
    password: str = "",
    local_dc: str = "",
    request_timeout_s: float = 10.0,
) -> tuple[Cluster, Session]:
    """A cluster and session whose statements default to LOCAL_QUORUM (LWTs: LOCAL_SERIAL).

    Requests go to the nodes of `local_dc`; empty, to the data centre of the contact
    points (the first one the driver reaches), which is the local one when the hosts name
    this region's nodes (a Kubernetes Service of one CassandraDatacenter).

    With a username it signs in as that role (PasswordAuthenticator); without one it offers
    no credentials, which only a cluster that does not authenticate accepts. A refused
    sign-in raises the driver's NoHostAvailable, its `errors` AuthenticationFailed per host.
    """
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=local_dc)),
        consistency_level=ConsistencyLevel.LOCAL_QUORUM,
        serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
        request_timeout=request_timeout_s,
    )
    cluster = Cluster(
        list(hosts),
        port=port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        protocol_version=5,
        auth_provider=PlainTextAuthProvider(username, password) if username else None,
    )
    return cluster, cluster.connect()


def connect_to(settings: CassandraSettings, *, request_timeout_s: float = 10.0) -> tuple[Cluster, Session]:
    """`connect` to the cluster settings name, as the role they name (if any).

    Every service opens Cassandra through this, so none can forget the credentials. A
    username without a password (or the reverse) is a configuration mistake: ValueError,
    before anything connects.
    """
    username, password = settings.cassandra_username, settings.cassandra_password.get_secret_value()
    if bool(username) != bool(password):
        given, missing = ("username", "password") if username else ("password", "username")
        raise ValueError(
            f"a Cassandra {given} without a {missing}: set both cassandra_username and "
            "cassandra_password, or neither (no authentication)"
        )
    return connect(
        settings.cassandra_hosts,
        settings.cassandra_port,
        username=username,
        password=password,
        local_dc=settings.cassandra_local_dc,
        request_timeout_s=request_timeout_s,
    )


def local_datacenter(session: Session) -> str:
    """The data centre of the node that answers: the session's local one (its requests go
    there), as Cassandra itself names it (`datacenter1` locally, the CassandraDatacenter's
    name in Kubernetes)."""
    row = session.execute("SELECT data_center FROM system.local").one()
    if row is None or not row.data_center:
        raise RuntimeError("Cassandra named no data centre for the local node")
    return str(row.data_center)


def replication(session: Session, replication_factor: int) -> str:
    """A keyspace's replication: NetworkTopologyStrategy, `replication_factor` replicas in
    the session's local data centre (whatever it is called, so no name is configured twice)."""
    dc = local_datacenter(session).replace("'", "''")
    return f"{{'class': 'NetworkTopologyStrategy', '{dc}': {int(replication_factor)}}}"


def create_keyspace(session: Session, keyspace: str, replication_factor: int) -> None:
    """The keyspace with NetworkTopologyStrategy in the local data centre (idempotent)."""
    strategy = replication(session, replication_factor)
    session.execute(f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {strategy}")


_tracer = trace.get_tracer("parley.cassandra")

#: The verb and the table of a CQL statement: `SELECT ... FROM ks.table`, `INSERT INTO
#: ks.table`, `UPDATE ks.table`, `DELETE ... FROM ks.table`, `CREATE TABLE ks.table`, ...
_STATEMENT = re.compile(
    r"^\s*(?P<verb>\w+)\b(?:.*?\b(?P<kind>FROM|INTO|TABLE|KEYSPACE)\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?"
    r"(?P<name>[\w.\"]+))?",
    re.IGNORECASE | re.DOTALL,
)


def describe_statement(statement: object) -> tuple[str, str, str]:
    """(operation, keyspace, table) of a request: its CQL verb and what it names; BATCH for
    a batch. Never the values: a span carries no user data."""
    if isinstance(statement, BatchStatement):
        return "BATCH", "", ""
    if isinstance(statement, BoundStatement):
        return _describe_prepared(statement.prepared_statement.query_string)
    if isinstance(statement, SimpleStatement):
        return _describe_text(statement.query_string)
    return _describe_text(str(statement))


def _describe_text(text: str) -> tuple[str, str, str]:
    """describe_statement of one CQL text."""
    found = _STATEMENT.match(text)
    if found is None:
        return "CQL", "", ""
    verb = found["verb"].upper()
    name = found["name"] or ""
    words = text.split()
    if verb == "UPDATE" and len(words) > 1:  # UPDATE names its table first
        name = words[1]
    if (found["kind"] or "").upper() == "KEYSPACE":
        return verb, name.replace('"', ""), ""
    keyspace, _, table = name.replace('"', "").rpartition(".")
    return verb, keyspace, table


#: A service runs the same prepared statements over and over: the regex runs once for each,
#: not once per request. Only prepared texts are kept (they hold no values).
_describe_prepared = functools.lru_cache(maxsize=1024)(_describe_text)


def observe_requests(session: Session, registry: CollectorRegistry) -> Histogram:
    """Time every request of session, from its creation to its first page or its error, and
    trace it: inside a traced call (a gRPC method, a consumed event) each request is a
    CLIENT span of that call (`cassandra SELECT account_months`), ended with its first page
    or its error. Requests outside any trace (background loops) make no span.

    The driver calls its request-init listeners before sending, so this covers every
    statement the service runs (through `execute*` or not) without wrapping each call.
    """
    seconds = Histogram(
        "parley_cassandra_request_seconds",
        "Time from sending a Cassandra request to its first page or error, by outcome (ok, error).",
        ["outcome"],
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        registry=registry,
    )
    ok, error = seconds.labels("ok"), seconds.labels("error")

    def started(future: ResponseFuture) -> None:
        begun = time.perf_counter()
        seen = False
        span = _request_span(future)

        def observe(child: Any, failure: BaseException | None = None) -> None:
            nonlocal seen
            if not seen:  # a paged query calls back once per page; its first one counts
                seen = True
                child.observe(time.perf_counter() - begun)
                if span is not None:
                    if failure is not None:
                        span.set_status(Status(StatusCode.ERROR, type(failure).__name__))
                    span.end()

        future.add_callbacks(lambda _rows: observe(ok), lambda failure: observe(error, failure))

    session.add_request_init_listener(started)
    return seconds


def _request_span(future: ResponseFuture) -> trace.Span | None:
    """A CLIENT span of the request under the current span; None outside a trace."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    operation, keyspace, table = describe_statement(future.query)
    attributes = {"db.system": "cassandra", "db.operation.name": operation}
    if table:
        attributes["db.collection.name"] = table
    if keyspace:
        attributes["db.namespace"] = keyspace
    name = f"cassandra {operation} {table}" if table else f"cassandra {operation}"
    return _tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)


async def execute(
    session: Session, statement: PreparedStatement | Statement | str, params: Sequence[Any] = ()
) -> list[Any]:
    """Run a statement without blocking the loop; returns all rows of the first page."""
    future: ResponseFuture = session.execute_async(statement, params)
    return await _rows(future)


async def execute_all(
    session: Session, statement: PreparedStatement | Statement | str, params: Sequence[Any] = ()
) -> list[Any]:
    """Run a query without blocking the loop; returns the rows of every page (for queries
    whose result is not bounded by a LIMIT: `execute` returns the first page only)."""
    future: ResponseFuture = session.execute_async(statement, params)
    rows: list[Any] = []
    while True:
        rows += await _rows(future)
        if not future.has_more_pages:
            return rows
        future.start_fetching_next_page()


async def execute_lwt(
    session: Session, statement: PreparedStatement | Statement | str, params: Sequence[Any] = ()
) -> bool:
    """Run a lightweight transaction; True when it was applied."""
    future: ResponseFuture = session.execute_async(statement, params)
    rows = await _rows(future)
    return bool(rows[0][0]) if rows else False


def _rows(future: ResponseFuture) -> asyncio.Future[list[Any]]:
    loop = asyncio.get_running_loop()
    result: asyncio.Future[list[Any]] = loop.create_future()

    def done(rows: Any) -> None:
        loop.call_soon_threadsafe(_settle, result, list(rows or []), None)

    def failed(error: BaseException) -> None:
        loop.call_soon_threadsafe(_settle, result, None, error)

    future.add_callbacks(done, failed)
    return result


def _settle(result: asyncio.Future[list[Any]], rows: list[Any] | None, error: BaseException | None) -> None:
    if result.done():
        return
    if error is not None:
        result.set_exception(error)
    else:
        result.set_result(rows or [])

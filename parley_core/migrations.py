"""Versioned CQL migrations that several instances of a service may run at the same time.

A service lists its schema as numbered `Migration`s and calls `migrate` at start-up (or from
`python -m svc_x migrate`, see `run_cli`). Applied versions are recorded in
`<keyspace>.schema_migrations` with a checksum of their statements, so a second run applies
nothing and an edited migration that already ran is refused instead of silently diverging.

Cassandra has no transactional DDL and concurrent schema changes on different coordinators
can conflict, so only one instance applies migrations at a time: it holds a lease, a row
written with a lightweight transaction (`IF NOT EXISTS USING TTL`), renewed while it works
and deleted at the end. The others wait, re-read the record and return once the versions
they need are there; if the holder dies, its lease expires and one of them takes over.
After each DDL statement the schema must agree on every node before anything else runs.

The two tables `migrate` itself needs are created by every instance before any lease
exists; they carry a table id derived from their name (`WITH ID`), so two coordinators
creating them at once create the same table, not two conflicting ones.

A migration that fails half-way stays unrecorded; since earlier statements of it may have
run, statements should be idempotent (`IF NOT EXISTS`, `IF EXISTS`), so the fixed migration
can simply run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from cassandra import OperationTimedOut, Unavailable, WriteTimeout
from cassandra.cluster import ResultSet, Session

from parley_core.cassandra import connect_to, execute, replication
from parley_core.settings import CassandraSettings

__all__ = [
    "Migration",
    "MigrationError",
    "migrate",
    "run_cli",
]

_log = structlog.get_logger("parley.migrations")

_KEYSPACE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")
_LEASE_NAME = "schema"
_SELECT_RECORDED = "SELECT version, checksum FROM {ks}.schema_migrations"
_RECORD = (
    "INSERT INTO {ks}.schema_migrations (version, description, checksum, applied_at, applied_by) "
    "VALUES (%s, %s, %s, %s, %s) IF NOT EXISTS"
)
_TAKE_LEASE = (
    "INSERT INTO {ks}.schema_migrations_lease (name, owner, expires_at) "
    "VALUES (%s, %s, %s) IF NOT EXISTS USING TTL %s"
)
#: Both cells again: a cell keeps the TTL it was written with, and the row lives while any does.
_RENEW_LEASE = (
    "UPDATE {ks}.schema_migrations_lease USING TTL %s SET owner = %s, expires_at = %s "
    "WHERE name = %s IF owner = %s"
)
_RELEASE_LEASE = "DELETE FROM {ks}.schema_migrations_lease WHERE name = %s IF owner = %s"
#: How long one DDL statement (including the driver's own schema-agreement wait) may take.
_DDL_TIMEOUT_S = 60.0


class MigrationError(RuntimeError):
    """The schema could not be brought to the code's version; the service must not start."""


@dataclass(frozen=True)
class Migration:
    """One step of a keyspace's schema. `{ks}` in a statement stands for the keyspace.

    Never edit a migration once it has run anywhere: add a new one. (Whitespace may change;
    the checksum ignores it.)
    """

    version: int
    description: str
    statements: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.version < 1:
            raise ValueError(f"migration versions start at 1, not {self.version}")
        if not self.statements:
            raise ValueError(f"migration {self.version} has no statements")

    @property
    def checksum(self) -> str:
        """sha256 of the statements, blind to layout (line breaks, indentation, spaces)."""
        digest = hashlib.sha256()
        for statement in self.statements:
            digest.update(_layout_free(statement).encode())
            digest.update(b"\x00")
        return digest.hexdigest()

    def cql(self, keyspace: str) -> list[str]:
        # replace, not str.format: CQL map literals ({'class': ...}) are full of braces.
        return [_in(keyspace, statement) for statement in self.statements]


async def migrate(
    session: Session,
    keyspace: str,
    replication_factor: int,
    migrations: Sequence[Migration],
    *,
    owner: str | None = None,
    lease_s: int = 30,
    wait_s: float = 300.0,
    poll_s: float = 0.5,
) -> list[int]:
    """Create the keyspace and apply the migrations it lacks, in version order.

    Returns the versions this call applied (empty when another instance applied them, or
    nothing was missing). Raises `MigrationError` when a recorded migration's checksum
    differs from the code's, a statement fails (the version stays unrecorded), the schema
    does not agree, or another instance held the lease for longer than `wait_s`.
    `owner` names this instance in the lease and the record (default: host:pid).
    """
    if not _KEYSPACE_NAME.fullmatch(keyspace):
        raise ValueError(f"not a valid keyspace name: {keyspace!r}")
    wanted = _in_order(migrations)
    holder = f"{owner or _default_owner()}/{uuid.uuid4().hex[:8]}"
    await _bootstrap(session, keyspace, replication_factor)

    deadline = time.monotonic() + wait_s
    waited = False
    while True:
        missing = _missing(wanted, await _recorded(session, keyspace))
        if not missing:
            if waited:
                _log.info("migrations applied by another instance", keyspace=keyspace)
            return []
        if await _take_lease(session, keyspace, holder, lease_s):
            break
        if not waited:
            _log.info("waiting for another instance to migrate", keyspace=keyspace, missing=len(missing))
            waited = True
        if time.monotonic() > deadline:
            raise MigrationError(f"another instance held the migration lease of {keyspace} for {wait_s}s")
        await asyncio.sleep(poll_s * (0.5 + random.random()))  # noqa: S311 - jitter, not a secret

    lease = _Lease(session, keyspace, holder, lease_s)
    lease.start()
    try:
        # Re-read under the lease: the previous holder may have applied some of them.
        missing = _missing(wanted, await _recorded(session, keyspace))
        applied: list[int] = []
        for migration in missing:
            await _apply(session, keyspace, migration, holder, lease)
            applied.append(migration.version)
        return applied
    finally:
        await lease.release()


def _default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_cli(
    cassandra: CassandraSettings,
    keyspace: str,
    replication_factor: int,
    migrations: Sequence[Migration],
) -> int:
    """The body of a service's `python -m svc_x migrate`: apply, log, return the exit status.

    ```
    if args.command == "migrate":
        sys.exit(run_cli(settings, settings.keyspace, settings.replication_factor, MIGRATIONS))
    ```
    It connects as the role `cassandra` names (parley_core.cassandra.connect_to). The caller
    configures logging first (parley_core.logging.configure_logging).
    """
    try:
        cluster, session = connect_to(cassandra)
    except Exception as error:
        _log.error("migration failed: Cassandra unreachable", keyspace=keyspace, error=repr(error))
        return 1
    try:
        applied = asyncio.run(migrate(session, keyspace, replication_factor, migrations))
    except MigrationError as error:
        _log.error("migration failed", keyspace=keyspace, error=str(error))
        return 1
    except Exception as error:
        _log.error("migration failed", keyspace=keyspace, error=repr(error))
        return 1
    finally:
        cluster.shutdown()
    _log.info("schema up to date", keyspace=keyspace, applied=applied)
    return 0


# Internals -------------------------------------------------------------------------------


def _in_order(migrations: Sequence[Migration]) -> list[Migration]:
    ordered = sorted(migrations, key=lambda m: m.version)
    for before, after in itertools.pairwise(ordered):
        if before.version == after.version:
            raise ValueError(f"two migrations have version {before.version}")
    return ordered


def _missing(wanted: list[Migration], recorded: dict[int, str]) -> list[Migration]:
    """The wanted migrations not yet recorded; an edited recorded one is an error."""
    for migration in wanted:
        checksum = recorded.get(migration.version)
        if checksum is not None and checksum != migration.checksum:
            raise MigrationError(
                f"migration {migration.version} ({migration.description}) was edited after it was "
                f"applied: recorded checksum {checksum[:12]}, code {migration.checksum[:12]}; "
                "add a new migration instead"
            )
    return [m for m in wanted if m.version not in recorded]


def _in(keyspace: str, template: str) -> str:
    """A statement template with its keyspace filled in (a name `migrate` has validated)."""
    return template.replace("{ks}", keyspace)


def _table_id(keyspace: str, table: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"cql:{keyspace}.{table}")


async def _bootstrap(session: Session, keyspace: str, replication_factor: int) -> None:
    """The keyspace and migrate's own two tables (every instance, before any lease)."""
    strategy = await asyncio.to_thread(replication, session, replication_factor)
    statements = [
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {strategy}",
        f"CREATE TABLE IF NOT EXISTS {keyspace}.schema_migrations ("
        "version int PRIMARY KEY, description text, checksum text, applied_at timestamp, applied_by text"
        f") WITH ID = {_table_id(keyspace, 'schema_migrations')}",
        f"CREATE TABLE IF NOT EXISTS {keyspace}.schema_migrations_lease ("
        "name text PRIMARY KEY, owner text, expires_at timestamp"
        f") WITH ID = {_table_id(keyspace, 'schema_migrations_lease')}",
    ]
    # Always run (no shortcut through the driver's metadata): that metadata can list a table
    # another instance is still creating before this node serves it. On existing objects
    # these statements change nothing and return at once.
    for statement in statements:
        await _ddl(session, statement)


async def _ddl(session: Session, statement: str) -> None:
    """Run one schema change and wait until every node agrees on the schema.

    The driver waits for agreement itself (up to `max_schema_agreement_wait`) before it
    returns a schema change; when that wait ran out, wait once more, then give up.
    """
    result: ResultSet = await asyncio.to_thread(session.execute, statement, timeout=_DDL_TIMEOUT_S)
    if result.response_future.is_schema_agreed:
        return
    control = session.cluster.control_connection
    if not await asyncio.to_thread(control.wait_for_schema_agreement):
        raise MigrationError(f"the nodes do not agree on the schema after: {_short(statement)}")


async def _recorded(session: Session, keyspace: str) -> dict[int, str]:
    rows = await execute(session, _in(keyspace, _SELECT_RECORDED))
    return {int(row.version): str(row.checksum) for row in rows}


async def _take_lease(session: Session, keyspace: str, holder: str, lease_s: int) -> bool:
    """True when holder has the lease: just taken, or taken by an earlier try that timed out.

    Contended LWTs can time out (a CAS write timeout) and still have been applied; the
    next try then finds holder's own row.
    """
    try:
        rows = await execute(
            session,
            _in(keyspace, _TAKE_LEASE),
            (_LEASE_NAME, holder, _expiry(lease_s), lease_s),
        )
    except (WriteTimeout, OperationTimedOut, Unavailable) as error:
        _log.info("migration lease attempt timed out; trying again", keyspace=keyspace, error=repr(error))
        return False
    if not rows:
        return False
    return bool(rows[0][0]) or getattr(rows[0], "owner", None) == holder


def _expiry(lease_s: int) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=lease_s)


class _Lease:
    """Renews the lease while migrations run; `lost` is set when it could not."""

    def __init__(self, session: Session, keyspace: str, holder: str, lease_s: int) -> None:
        self._session, self._keyspace, self._holder, self._lease_s = session, keyspace, holder, lease_s
        self.lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._renew(), name=f"migration-lease-{self._keyspace}")

    def check(self) -> None:
        if self.lost.is_set():
            raise MigrationError(f"lost the migration lease of {self._keyspace}; another instance may go on")

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            try:
                rows = await execute(
                    self._session,
                    _in(self._keyspace, _RENEW_LEASE),
                    (self._lease_s, self._holder, _expiry(self._lease_s), _LEASE_NAME, self._holder),
                )
            except Exception as error:  # one failed renewal is not yet a lost lease
                _log.warning("migration lease renewal failed", keyspace=self._keyspace, error=repr(error))
                continue
            if not (rows and rows[0][0]):
                _log.error("migration lease lost", keyspace=self._keyspace)
                self.lost.set()
                return

    async def release(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await execute(
                self._session,
                _in(self._keyspace, _RELEASE_LEASE),
                (_LEASE_NAME, self._holder),
            )
        except Exception as error:  # it expires on its own
            _log.warning("migration lease not released", keyspace=self._keyspace, error=repr(error))


async def _apply(session: Session, keyspace: str, migration: Migration, holder: str, lease: _Lease) -> None:
    started = time.perf_counter()
    for index, statement in enumerate(migration.cql(keyspace)):
        lease.check()
        try:
            if _is_ddl(statement):
                await _ddl(session, statement)
            else:  # a data statement (a seed row, a backfill)
                await execute(session, statement)
        except MigrationError:
            raise
        except Exception as error:
            raise MigrationError(
                f"migration {migration.version} ({migration.description}), statement {index + 1} "
                f"failed: {error!r}; nothing recorded, fix it and run again"
            ) from error
    lease.check()
    rows = await execute(
        session,
        _in(keyspace, _RECORD),
        (migration.version, migration.description, migration.checksum, datetime.now(UTC), holder),
    )
    if rows and not rows[0][0] and getattr(rows[0], "checksum", None) != migration.checksum:
        raise MigrationError(f"migration {migration.version} was recorded with another checksum meanwhile")
    _log.info(
        "migration applied",
        keyspace=keyspace,
        version=migration.version,
        description=migration.description,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )


_DDL_VERBS = ("CREATE", "ALTER", "DROP", "TRUNCATE")


def _is_ddl(statement: str) -> bool:
    words = statement.split(None, 1)
    return bool(words) and words[0].upper() in _DDL_VERBS


_PUNCTUATION_SPACE = re.compile(r"\s*([(),;<>=])\s*")


def _layout_free(statement: str) -> str:
    """One space between words, none around punctuation, none at the ends."""
    return _PUNCTUATION_SPACE.sub(r"\1", " ".join(statement.split()))


def _short(statement: str) -> str:
    flat = " ".join(statement.split())
    return flat if len(flat) <= 80 else flat[:77] + "..."

"""What every svc_session table adapter shares: prepared statements and time conversions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.cluster import Session as CqlSession

from parley_core.cassandra import execute

#: Single-partition tables (the user directory, signing keys, outbox) use this bucket; at
#: the scale where one partition is too big they are split by a hash prefix.
BUCKET = 0


def utc(value: datetime | None) -> datetime | None:
    """The driver returns naive UTC datetimes; the domain works with aware ones."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def req(value: datetime | None) -> datetime:
    converted = utc(value)
    assert converted is not None
    return converted


class Table:
    """Base of one aggregate's adapter: statements prepared once, `{ks}` the keyspace."""

    #: CREATE TABLE IF NOT EXISTS statements, with the keyspace left out.
    SCHEMA: tuple[str, ...] = ()
    #: (table, column, type) added to tables created by earlier versions.
    COLUMNS: tuple[tuple[str, str, str], ...] = ()

    def __init__(self, session: CqlSession, keyspace: str) -> None:
        self._cql = session
        self._ks = keyspace
        self._prepared: dict[str, Any] = {}

    @classmethod
    def create_schema(cls, session: CqlSession, keyspace: str) -> None:
        """Create this aggregate's tables and columns if missing (idempotent, blocking)."""
        for statement in cls.SCHEMA:
            session.execute(
                statement.replace("CREATE TABLE IF NOT EXISTS ", f"CREATE TABLE IF NOT EXISTS {keyspace}.")
            )
        for table, column, kind in cls.COLUMNS:
            present = session.execute(
                "SELECT column_name FROM system_schema.columns "
                "WHERE keyspace_name = %s AND table_name = %s AND column_name = %s",
                (keyspace, table, column),
            ).one()
            if present is None:
                session.execute(f"ALTER TABLE {keyspace}.{table} ADD {column} {kind}")

    async def _q(self, cql: str) -> Any:
        """The prepared statement of cql; the first use prepares it off the event loop."""
        statement = self._prepared.get(cql)
        if statement is None:
            statement = await asyncio.to_thread(self._cql.prepare, cql.replace("{ks}", self._ks))
            self._prepared[cql] = statement
        return statement

    async def _serial_read(self, cql: str, params: tuple[Any, ...]) -> list[Any]:
        """A linearizable read (LOCAL_SERIAL): sees every lightweight transaction that won."""
        bound = (await self._q(cql)).bind(params)
        bound.consistency_level = ConsistencyLevel.LOCAL_SERIAL
        return await execute(self._cql, bound, None)  # type: ignore[arg-type]

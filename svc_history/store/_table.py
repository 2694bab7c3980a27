"""What every svc_history table adapter shares: prepared statements, paging, conversions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from cassandra.cluster import ResponseFuture
from cassandra.cluster import Session as CqlSession
from cassandra.query import UNSET_VALUE

from parley_core.cassandra import execute, execute_lwt

#: Stands for "no parent" in key columns, which cannot hold a null.
ROOT = uuid.UUID(int=0)


def utc(value: datetime | None) -> datetime | None:
    """The driver returns naive UTC datetimes; the domain works with aware ones."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def req(value: datetime | None) -> datetime:
    converted = utc(value)
    assert converted is not None
    return converted


def uid(value: str) -> uuid.UUID:
    return uuid.UUID(value)


def unset_none(value: Any) -> Any:
    """value, or "leave the column alone" for None: binding a null writes a tombstone."""
    return UNSET_VALUE if value is None else value


def parent_key(parent_id: str) -> uuid.UUID:
    return uuid.UUID(parent_id) if parent_id else ROOT


def parent_of(value: uuid.UUID | None) -> str:
    return "" if value is None or value == ROOT else str(value)


class Table:
    """Base of one aggregate's adapter: statements prepared once, `{ks}` the keyspace."""

    def __init__(self, session: CqlSession, keyspace: str) -> None:
        self._cql = session
        self._ks = keyspace
        self._prepared: dict[str, Any] = {}

    async def _q(self, cql: str) -> Any:
        """The prepared statement of cql; the first use prepares it off the event loop."""
        statement = self._prepared.get(cql)
        if statement is None:
            statement = await asyncio.to_thread(self._cql.prepare, cql.replace("{ks}", self._ks))
            self._prepared[cql] = statement
        return statement

    async def _run(self, cql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of the first page (single-row and bounded reads, and writes)."""
        return await execute(self._cql, await self._q(cql), params)

    async def _lwt(self, cql: str, params: Sequence[Any] = ()) -> bool:
        return await execute_lwt(self._cql, await self._q(cql), params)

    async def _all(self, cql: str, params: Sequence[Any] = (), fetch_size: int = 5000) -> list[Any]:
        """Every row, page by page (reads that can pass one page)."""
        return [row async for page in self._pages(cql, params, fetch_size) for row in page]

    async def _pages(
        self, cql: str, params: Sequence[Any] = (), fetch_size: int = 5000
    ) -> AsyncIterator[list[Any]]:
        statement = await self._q(cql)
        paging_state: bytes | None = None
        while True:
            bound = statement.bind(params)
            bound.fetch_size = fetch_size
            future: ResponseFuture = self._cql.execute_async(bound, paging_state=paging_state)
            await _settled(future)
            result = future.result()  # already settled: does not block
            yield list(result.current_rows)
            paging_state = result.paging_state
            if not paging_state:
                return


def _settled(future: ResponseFuture) -> asyncio.Future[None]:
    """Resolves when the driver's future has its page (or its error)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(_: object) -> None:
        loop.call_soon_threadsafe(lambda: None if done.done() else done.set_result(None))

    future.add_callbacks(settle, settle)
    return done

"""Where each reindex run got to (`search_reindex`), so an interrupted one resumes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from svc_history.store._table import Table, utc

__all__ = ["ReindexRun", "ReindexRunStore"]


@dataclass(frozen=True)
class ReindexRun:
    run: str
    collection: str
    #: The partition token of the last user finished; None before the first.
    last_token: int | None
    users: int
    messages: int
    start_time: datetime
    finish_time: datetime | None


class ReindexRunStore(Table):
    async def get(self, run: str) -> ReindexRun | None:
        rows = await self._run(
            "SELECT run, collection, last_token, users, messages, start_time, finish_time "
            "FROM {ks}.search_reindex WHERE run = ?",
            (run,),
        )
        if not rows:
            return None
        row = rows[0]
        start = utc(row.start_time)
        assert start is not None
        return ReindexRun(
            row.run,
            row.collection,
            row.last_token,
            row.users or 0,
            row.messages or 0,
            start,
            utc(row.finish_time),
        )

    async def save(self, run: ReindexRun) -> None:
        await self._run(
            "INSERT INTO {ks}.search_reindex (run, collection, last_token, users, messages, start_time, "
            "finish_time) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                run.run,
                run.collection,
                run.last_token,
                run.users,
                run.messages,
                run.start_time,
                run.finish_time,
            ),
        )

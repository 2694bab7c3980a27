"""An erasure under way: its event id and running totals, so a crashed one resumes with them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from svc_history.store._table import Table, req


@dataclass(frozen=True)
class Erasure:
    user_id: str
    event_id: str
    start_time: datetime
    conversations: int = 0
    messages: int = 0
    share_links: int = 0


class ErasureStore(Table):
    async def get(self, user_id: str) -> Erasure | None:
        rows = await self._run("SELECT * FROM {ks}.erasures WHERE user_id = ?", (user_id,))
        if not rows or rows[0].event_id is None:
            return None
        row = rows[0]
        return Erasure(
            user_id,
            str(row.event_id),
            req(row.start_time),
            int(row.conversations or 0),
            int(row.messages or 0),
            int(row.share_links or 0),
        )

    async def save(self, erasure: Erasure) -> None:
        await self._run(
            "INSERT INTO {ks}.erasures (user_id, event_id, start_time, conversations, messages, share_links) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                erasure.user_id, uuid.UUID(erasure.event_id), erasure.start_time, erasure.conversations,
                erasure.messages, erasure.share_links,
            ),
        )  # fmt: skip

    async def delete(self, user_id: str) -> None:
        await self._run("DELETE FROM {ks}.erasures WHERE user_id = ?", (user_id,))

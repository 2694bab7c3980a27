"""Conversations: one row each in the owner's partition, and the listing order beside it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from svc_history.model import Conversation
from svc_history.store._table import Table, req, uid, unset_none

_COLUMNS = (
    "user_id, conversation_id, title, model, system_prompt, folder, tags, pinned, archived, "
    "active_message, create_time, update_time, version, request_id"
)


@dataclass(frozen=True)
class OrderEntry:
    """One entry of the listing order: pinned first, then the most recently updated."""

    pinned_rank: int
    update_time: datetime
    conversation_id: str

    def matches(self, conversation: Conversation) -> bool:
        return (
            self.pinned_rank == conversation.pinned_rank
            and self.update_time == conversation.update_time
            and self.conversation_id == conversation.conversation_id
        )


def entry_of(conversation: Conversation) -> OrderEntry:
    return OrderEntry(conversation.pinned_rank, conversation.update_time, conversation.conversation_id)


_MARKERS = ", ".join("?" * 14)


class ConversationStore(Table):
    async def get(self, user_id: str, conversation_id: str) -> Conversation | None:
        rows = await self._run(
            f"SELECT {_COLUMNS} FROM {{ks}}.conversations WHERE user_id = ? AND conversation_id = ?",  # noqa: S608 - fixed text
            (user_id, uid(conversation_id)),
        )
        return _conversation(rows[0]) if rows else None

    async def get_many(self, user_id: str, conversation_ids: Sequence[str]) -> dict[str, Conversation]:
        if not conversation_ids:
            return {}
        rows = await self._run(
            f"SELECT {_COLUMNS} FROM {{ks}}.conversations WHERE user_id = ? AND conversation_id IN ?",  # noqa: S608 - fixed text
            (user_id, [uid(c) for c in conversation_ids]),
        )
        found = (_conversation(row) for row in rows)
        return {c.conversation_id: c for c in found if c is not None}

    async def all_of(self, user_id: str) -> list[Conversation]:
        """Every conversation of a user (export, erasure), whole rows only."""
        rows = await self._all(
            f"SELECT {_COLUMNS} FROM {{ks}}.conversations WHERE user_id = ?",  # noqa: S608 - fixed text
            (user_id,),
        )
        return [c for c in (_conversation(row) for row in rows) if c is not None]

    async def ids_of(self, user_id: str) -> list[str]:
        """Every conversation id in a user's partition, partial rows included (erasure)."""
        rows = await self._all("SELECT conversation_id FROM {ks}.conversations WHERE user_id = ?", (user_id,))
        return [str(row.conversation_id) for row in rows]

    async def users_after(self, token: int | None, limit: int) -> list[tuple[int, str]]:
        """(partition token, user id) of users with conversations, in token order, after `token`."""
        if token is None:
            rows = await self._run(
                "SELECT DISTINCT token(user_id) AS t, user_id FROM {ks}.conversations LIMIT ?", (limit,)
            )
        else:
            rows = await self._run(
                "SELECT DISTINCT token(user_id) AS t, user_id FROM {ks}.conversations "
                "WHERE token(user_id) > ? LIMIT ?",
                (token, limit),
            )
        return [(int(row.t), str(row.user_id)) for row in rows]

    async def insert(self, conversation: Conversation) -> None:
        await self._run(
            f"INSERT INTO {{ks}}.conversations ({_COLUMNS}) VALUES ({_MARKERS})",  # noqa: S608 - fixed text
            _values(conversation),
        )

    async def replace(self, conversation: Conversation, expected_version: str | None) -> bool:
        """Write every changeable field; with expected_version, only if the row still has it."""
        values = (
            conversation.title, conversation.model, conversation.system_prompt, conversation.folder,
            list(conversation.tags), conversation.pinned, conversation.archived,
            unset_none(uid(conversation.active_message) if conversation.active_message else None),
            conversation.update_time, uid(conversation.version),
            conversation.user_id, uid(conversation.conversation_id),
        )  # fmt: skip
        update = (
            "UPDATE {ks}.conversations SET title = ?, model = ?, system_prompt = ?, folder = ?, tags = ?, "
            "pinned = ?, archived = ?, active_message = ?, update_time = ?, version = ? "
            "WHERE user_id = ? AND conversation_id = ?"
        )
        if expected_version is None:
            await self._run(update, values)
            return True
        return await self._lwt(update + " IF version = ?", (*values, uid(expected_version)))

    async def touch(self, conversation: Conversation) -> None:
        """Record an appended message: the active message, update time, version and title."""
        await self._run(
            "UPDATE {ks}.conversations SET active_message = ?, update_time = ?, version = ?, title = ? "
            "WHERE user_id = ? AND conversation_id = ?",
            (
                uid(conversation.active_message), conversation.update_time, uid(conversation.version),
                conversation.title, conversation.user_id, uid(conversation.conversation_id),
            ),
        )  # fmt: skip

    async def delete(self, user_id: str, conversation_id: str) -> None:
        await self._run(
            "DELETE FROM {ks}.conversations WHERE user_id = ? AND conversation_id = ?",
            (user_id, uid(conversation_id)),
        )

    # The listing order ------------------------------------------------------------------

    async def put_entry(self, user_id: str, entry: OrderEntry) -> None:
        await self._run(
            "INSERT INTO {ks}.conversation_order (user_id, pinned_rank, update_time, conversation_id) "
            "VALUES (?, ?, ?, ?)",
            (user_id, entry.pinned_rank, entry.update_time, uid(entry.conversation_id)),
        )

    async def drop_entry(self, user_id: str, entry: OrderEntry) -> None:
        await self._run(
            "DELETE FROM {ks}.conversation_order WHERE user_id = ? AND pinned_rank = ? AND update_time = ? "
            "AND conversation_id = ?",
            (user_id, entry.pinned_rank, entry.update_time, uid(entry.conversation_id)),
        )

    async def entries(self, user_id: str, after: OrderEntry | None, limit: int) -> list[OrderEntry]:
        """Up to limit entries in listing order, after `after` (from the start for None)."""
        if after is None:
            rows = await self._run(
                "SELECT pinned_rank, update_time, conversation_id FROM {ks}.conversation_order "
                "WHERE user_id = ? LIMIT ?",
                (user_id, limit),
            )
        else:
            # Every clustering column is descending, so "after" in the listing is "less than".
            rows = await self._run(
                "SELECT pinned_rank, update_time, conversation_id FROM {ks}.conversation_order "
                "WHERE user_id = ? AND (pinned_rank, update_time, conversation_id) < (?, ?, ?) LIMIT ?",
                (user_id, after.pinned_rank, after.update_time, uid(after.conversation_id), limit),
            )
        return [OrderEntry(int(r.pinned_rank), req(r.update_time), str(r.conversation_id)) for r in rows]

    async def drop_order(self, user_id: str) -> None:
        await self._run("DELETE FROM {ks}.conversation_order WHERE user_id = ?", (user_id,))


def _values(c: Conversation) -> tuple[Any, ...]:
    return (
        c.user_id, uid(c.conversation_id), c.title, c.model, c.system_prompt, c.folder, list(c.tags),
        c.pinned, c.archived, unset_none(uid(c.active_message) if c.active_message else None), c.create_time,
        c.update_time, uid(c.version), c.request_id,
    )  # fmt: skip


def _conversation(row: Any) -> Conversation | None:
    # A row without a create time is what a write racing a delete left behind: not a
    # conversation.
    if row.create_time is None:
        return None
    return Conversation(
        user_id=row.user_id,
        conversation_id=str(row.conversation_id),
        title=row.title or "",
        model=row.model or "",
        system_prompt=row.system_prompt or "",
        folder=row.folder or "",
        tags=tuple(row.tags or ()),
        pinned=bool(row.pinned),
        archived=bool(row.archived),
        active_message=str(row.active_message) if row.active_message else "",
        create_time=req(row.create_time),
        update_time=req(row.update_time or row.create_time),
        version=str(row.version or uuid.UUID(int=0)),
        request_id=row.request_id or "",
    )

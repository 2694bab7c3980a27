"""Messages in bounded buckets, the tree's skeleton beside them, and the per-conversation count.

A message row lives in partition (conversation, bucket); the skeleton (`message_tree` by
message, `message_children` by parent) says where each one is and what it follows, so a
reader finds any message, path or sibling set without scanning the messages themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from cassandra.query import BatchStatement, BatchType

from parley_core.cassandra import execute
from svc_history.model import Message, Usage, order_key_of
from svc_history.store._table import Table, parent_key, parent_of, req, uid, unset_none
from svc_history.tree import Node

_COLUMNS = (
    "conversation_id, bucket, message_id, user_id, parent_id, author, text, model, state, input_tokens, "
    "output_tokens, has_usage, turn, create_time"
)

#: Ids per `IN` query: larger lists make one coordinator do too much of a page's work.
_IN_CHUNK = 100


class MessageStore(Table):
    async def insert(self, message: Message) -> None:
        usage = message.usage
        await self._run(
            f"INSERT INTO {{ks}}.messages ({_COLUMNS}) VALUES ({', '.join('?' * 14)})",  # noqa: S608 - fixed text
            (
                uid(message.conversation_id), message.bucket, uid(message.message_id), message.user_id,
                unset_none(uid(message.parent_id) if message.parent_id else None), message.author,
                message.text, message.model, message.state, usage.input_tokens if usage else 0,
                usage.output_tokens if usage else 0, usage is not None, message.turn, message.create_time,
            ),
        )  # fmt: skip

    async def add_node(self, message: Message) -> None:
        """Put a stored message into the tree (after its row exists, so the tree never
        names a message that cannot be read). Both rows share the conversation's partition
        key, so one unlogged batch applies them as one mutation on each replica."""
        conversation_id, message_id = uid(message.conversation_id), uid(message.message_id)
        parent = parent_key(message.parent_id)
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        batch.add(
            await self._q(
                "INSERT INTO {ks}.message_tree (conversation_id, message_id, parent_id, bucket, user_id) "
                "VALUES (?, ?, ?, ?, ?)"
            ),
            (conversation_id, message_id, parent, message.bucket, message.user_id),
        )
        batch.add(
            await self._q(
                "INSERT INTO {ks}.message_children (conversation_id, parent_id, message_id, user_id) "
                "VALUES (?, ?, ?, ?)"
            ),
            (conversation_id, parent, message_id, message.user_id),
        )
        await execute(self._cql, batch)

    async def node(self, conversation_id: str, message_id: str) -> Node | None:
        rows = await self._run(
            "SELECT message_id, parent_id, bucket FROM {ks}.message_tree "
            "WHERE conversation_id = ? AND message_id = ?",
            (uid(conversation_id), uid(message_id)),
        )
        return _node(rows[0]) if rows and rows[0].bucket is not None else None

    async def nodes(self, conversation_id: str) -> list[Node]:
        """The whole skeleton of a conversation."""
        rows = await self._all(
            "SELECT message_id, parent_id, bucket FROM {ks}.message_tree WHERE conversation_id = ?",
            (uid(conversation_id),),
            fetch_size=10_000,
        )
        return [_node(row) for row in rows if row.message_id is not None and row.bucket is not None]

    async def children(self, conversation_id: str, parent_id: str) -> list[str]:
        rows = await self._run(
            "SELECT message_id FROM {ks}.message_children WHERE conversation_id = ? AND parent_id = ?",
            (uid(conversation_id), parent_key(parent_id)),
        )
        return [str(row.message_id) for row in rows if row.message_id is not None]

    async def get_many(self, conversation_id: str, located: Iterable[tuple[int, str]]) -> dict[str, Message]:
        """Messages by (bucket, id), one query per bucket, all at once."""
        by_bucket: dict[int, list[str]] = {}
        for bucket, message_id in located:
            by_bucket.setdefault(bucket, []).append(message_id)
        chunks = [
            (bucket, ids[start : start + _IN_CHUNK])
            for bucket, ids in by_bucket.items()
            for start in range(0, len(ids), _IN_CHUNK)
        ]
        replies = await asyncio.gather(
            *(
                self._run(
                    f"SELECT {_COLUMNS} FROM {{ks}}.messages WHERE conversation_id = ? AND bucket = ? "  # noqa: S608 - fixed text
                    "AND message_id IN ?",
                    (uid(conversation_id), bucket, [uid(i) for i in ids]),
                )
                for bucket, ids in chunks
            )
        )
        return {str(row.message_id): _message(row) for rows in replies for row in rows}

    async def count(self, conversation_id: str) -> int:
        rows = await self._run(
            "SELECT messages FROM {ks}.message_counts WHERE conversation_id = ?", (uid(conversation_id),)
        )
        return int(rows[0].messages or 0) if rows else 0

    async def counted(self, conversation_id: str) -> None:
        await self._run(
            "UPDATE {ks}.message_counts SET messages = messages + 1 WHERE conversation_id = ?",
            (uid(conversation_id),),
        )

    async def delete_conversation(self, conversation_id: str, buckets: Sequence[int]) -> None:
        """Every message row, the skeleton and the count of a conversation."""
        key = uid(conversation_id)
        await asyncio.gather(
            *(
                self._run("DELETE FROM {ks}.messages WHERE conversation_id = ? AND bucket = ?", (key, bucket))
                for bucket in buckets
            )
        )
        # The skeleton goes after the rows it points to, so a crash leaves it to find them.
        await asyncio.gather(
            self._run("DELETE FROM {ks}.message_tree WHERE conversation_id = ?", (key,)),
            self._run("DELETE FROM {ks}.message_children WHERE conversation_id = ?", (key,)),
            self._run("DELETE FROM {ks}.message_counts WHERE conversation_id = ?", (key,)),
        )


def _node(row: Any) -> Node:
    return Node(str(row.message_id), parent_of(row.parent_id), int(row.bucket), order_key_of(row.message_id))


def _message(row: Any) -> Message:
    return Message(
        user_id=row.user_id or "",
        conversation_id=str(row.conversation_id),
        message_id=str(row.message_id),
        parent_id=parent_of(row.parent_id),
        author=row.author or "",
        text=row.text or "",
        model=row.model or "",
        state=row.state or "complete",
        usage=Usage(int(row.input_tokens or 0), int(row.output_tokens or 0)) if row.has_usage else None,
        turn=row.turn or "",
        create_time=req(row.create_time),
        bucket=int(row.bucket),
    )

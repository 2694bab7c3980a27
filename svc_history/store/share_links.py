"""Share links: the owner's rows per conversation, one row per public token (its digest),
and read counts."""

from __future__ import annotations

import asyncio
from typing import Any

from svc_history.model import ShareLink
from svc_history.store._table import Table, req, uid, unset_none, utc

#: One link's key.
_ONE = "user_id = ? AND conversation_id = ? AND share_link_id = ?"


class ShareLinkStore(Table):
    async def insert(self, link: ShareLink, token_hash: str) -> None:
        """The token's row first: a link the owner can see always works."""
        last = uid(link.last_message)
        await self._run(
            "INSERT INTO {ks}.share_tokens (token_hash, user_id, conversation_id, share_link_id, "
            "last_message, expire_time, password_hash, create_time, title) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                token_hash, link.user_id, uid(link.conversation_id), uid(link.share_link_id), last,
                unset_none(link.expire_time), link.password_hash, link.create_time, link.title,
            ),
        )  # fmt: skip
        await self._run(
            "INSERT INTO {ks}.share_links (user_id, conversation_id, share_link_id, token_hash, "
            "last_message, expire_time, password_hash, create_time, title, request_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                link.user_id, uid(link.conversation_id), uid(link.share_link_id), token_hash, last,
                unset_none(link.expire_time), link.password_hash, link.create_time, link.title,
                link.request_id,
            ),
        )  # fmt: skip

    async def of_conversation(self, user_id: str, conversation_id: str) -> list[tuple[ShareLink, str]]:
        """Every link of a conversation, newest first, with its token digest and read count."""
        key = (user_id, uid(conversation_id))
        rows, views = await asyncio.gather(
            self._all("SELECT * FROM {ks}.share_links WHERE user_id = ? AND conversation_id = ?", key),
            self._all(
                "SELECT share_link_id, views FROM {ks}.share_views WHERE user_id = ? AND conversation_id = ?",
                key,
            ),
        )
        counts = {str(v.share_link_id): int(v.views or 0) for v in views}
        return [
            (_link(row, counts.get(str(row.share_link_id), 0)), row.token_hash or "")
            for row in rows
            if row.create_time is not None
        ]

    async def get(
        self, user_id: str, conversation_id: str, share_link_id: str
    ) -> tuple[ShareLink, str] | None:
        key = (user_id, uid(conversation_id), uid(share_link_id))
        rows, views = await asyncio.gather(
            self._run(
                f"SELECT * FROM {{ks}}.share_links WHERE {_ONE}",  # noqa: S608 - fixed text
                key,
            ),
            self._run(
                "SELECT views FROM {ks}.share_views WHERE user_id = ? AND conversation_id = ? "
                "AND share_link_id = ?",
                key,
            ),
        )
        if not rows or rows[0].create_time is None:
            return None
        return _link(rows[0], int(views[0].views or 0) if views else 0), rows[0].token_hash or ""

    async def by_token(self, token_hash: str) -> ShareLink | None:
        rows = await self._run("SELECT * FROM {ks}.share_tokens WHERE token_hash = ?", (token_hash,))
        if not rows or rows[0].create_time is None or rows[0].last_message is None:
            return None
        return _link(rows[0], 0)

    async def viewed(self, link: ShareLink) -> None:
        await self._run(
            "UPDATE {ks}.share_views SET views = views + 1 WHERE user_id = ? AND conversation_id = ? "
            "AND share_link_id = ?",
            (link.user_id, uid(link.conversation_id), uid(link.share_link_id)),
        )

    async def delete(self, link: ShareLink, token_hash: str) -> None:
        """The public token first: once this starts, the link stops working."""
        if token_hash:
            await self._run("DELETE FROM {ks}.share_tokens WHERE token_hash = ?", (token_hash,))
        key = (link.user_id, uid(link.conversation_id), uid(link.share_link_id))
        await asyncio.gather(
            self._run(
                f"DELETE FROM {{ks}}.share_views WHERE {_ONE}",  # noqa: S608 - fixed text
                key,
            ),
            self._run(
                f"DELETE FROM {{ks}}.share_links WHERE {_ONE}",  # noqa: S608 - fixed text
                key,
            ),
        )

    async def delete_conversation(self, user_id: str, conversation_id: str) -> int:
        """Every link of a conversation; returns how many there were."""
        key = (user_id, uid(conversation_id))
        rows = await self._all(
            "SELECT token_hash FROM {ks}.share_links WHERE user_id = ? AND conversation_id = ?", key
        )
        hashes = [row.token_hash for row in rows if row.token_hash]
        await asyncio.gather(
            *(self._run("DELETE FROM {ks}.share_tokens WHERE token_hash = ?", (h,)) for h in hashes)
        )
        await asyncio.gather(
            self._run("DELETE FROM {ks}.share_views WHERE user_id = ? AND conversation_id = ?", key),
            self._run("DELETE FROM {ks}.share_links WHERE user_id = ? AND conversation_id = ?", key),
        )
        return len(rows)


def _link(row: Any, views: int) -> ShareLink:
    return ShareLink(
        user_id=row.user_id,
        conversation_id=str(row.conversation_id),
        share_link_id=str(row.share_link_id),
        last_message=str(row.last_message),
        expire_time=utc(row.expire_time),
        password_hash=row.password_hash or "",
        create_time=req(row.create_time),
        title=row.title or "",
        view_count=views,
        request_id=getattr(row, "request_id", None) or "",
    )

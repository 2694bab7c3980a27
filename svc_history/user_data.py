"""A user's data as a whole: the export (docs/formats/export.md) and the erasure.

Erasure is resumable: it first records that it is under way (with the UserDeleted event id
and running totals), deletes conversation by conversation, each with its messages and share
links (`Conversations.remove`, whose row goes last), then the user's own partitions, adds
UserDeleted to the outbox, and only then forgets its own record. A crash anywhere leaves
either the record or rows a repeated call finds; the repeated call finishes the work and
reports the totals of both. Called again after it finished, it finds nothing, deletes
nothing, and announces the same event again (the id is derived from the user, so consumers
drop the repeat).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from svc_history.conversations import Conversations
from svc_history.messages import Messages
from svc_history.model import (
    Conversation,
    ErasureReceipt,
    EventLog,
    Placed,
    ShareLink,
    event_id,
    now,
    user_name,
)
from svc_history.store import Erasure, Stores
from svc_history.store.requests import conversation_scope

#: The export format's version (docs/formats/export.md).
FORMAT_VERSION = 1

#: Messages read per query while exporting a conversation.
_EXPORT_CHUNK = 200


@dataclass(frozen=True)
class Header:
    user_id: str
    export_time: datetime
    format_version: int = FORMAT_VERSION


ExportRecord = Header | Conversation | Placed | ShareLink


class UserData:
    def __init__(
        self, stores: Stores, conversations: Conversations, messages: Messages, events: EventLog
    ) -> None:
        self._stores = stores
        self._conversations = conversations
        self._messages = messages
        self._events = events

    async def export(self, user_id: str) -> AsyncIterator[ExportRecord]:
        """The header, then each conversation (oldest first) followed by its messages
        (oldest first) and its share links (oldest first)."""
        yield Header(user_id, now())
        conversations = await self._stores.conversations.all_of(user_id)
        conversations.sort(key=lambda c: (c.create_time, c.conversation_id))
        for conversation in conversations:
            yield conversation
            conversation_id = conversation.conversation_id
            tree = await self._messages.tree(conversation_id)
            ordered = tree.in_time_order()
            for start in range(0, len(ordered), _EXPORT_CHUNK):
                for placed in await self._messages.read(
                    tree, conversation_id, ordered[start : start + _EXPORT_CHUNK]
                ):
                    yield placed
            links = [
                link for link, _ in await self._stores.share_links.of_conversation(user_id, conversation_id)
            ]
            for link in sorted(links, key=lambda link: (link.create_time, link.share_link_id)):
                yield link

    async def erase(self, user_id: str) -> ErasureReceipt:
        erasures = self._stores.erasures
        erasure = await erasures.get(user_id)
        if erasure is None:
            erasure = Erasure(user_id, event_id("user-deleted", user_name(user_id)), now())
            await erasures.save(erasure)
        store = self._stores.conversations
        for conversation_id in await store.ids_of(user_id):
            conversation = await store.get(user_id, conversation_id)
            whole = conversation is not None
            removed = await self._conversations.remove(
                conversation or _remains(user_id, conversation_id), announce=False
            )
            erasure = replace(
                erasure,
                conversations=erasure.conversations + int(whole),
                messages=erasure.messages + removed.messages,
                share_links=erasure.share_links + removed.share_links,
            )
            await erasures.save(erasure)
        await store.drop_order(user_id)
        await self._stores.requests.drop([conversation_scope(user_id)])
        moment = now()
        await self._events.user_deleted(user_id, erasure.event_id, moment)
        await erasures.delete(user_id)
        return ErasureReceipt(
            deleted_conversations=erasure.conversations,
            deleted_messages=erasure.messages,
            deleted_share_links=erasure.share_links,
            delete_time=moment,
            event_id=erasure.event_id,
        )


_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


def _remains(user_id: str, conversation_id: str) -> Conversation:
    """What is left of a conversation whose row lost its create time (a write that raced a
    delete): enough to find and remove its contents."""
    return Conversation(
        user_id=user_id,
        conversation_id=conversation_id,
        title="",
        model="",
        system_prompt="",
        folder="",
        tags=(),
        pinned=False,
        archived=False,
        active_message="",
        create_time=_NEVER,
        update_time=_NEVER,
        version=str(uuid.UUID(int=0)),
    )

"""Messages: the tree of a conversation, listed as its active path or whole, and appended.

AppendMessage's steps, in this order, each idempotent, so a retry (or a concurrent
duplicate, which finds the first request's claim) redoes exactly the same writes:

1. claim the request id with the whole message (a lightweight transaction);
2. write the message row (in the bucket the conversation's count chose);
3. add MessageCreated to the outbox (the write it describes has succeeded);
4. add the message to the skeleton (from now on readers see it);
5. make it the conversation's active message (and its title, if it had none);
6. count it (only the request that won the claim).

A retry that finds the skeleton entry knows 2-4 happened and returns the message as is.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from bisect import bisect_right
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import Any

from parley_core.errors import FieldViolation
from svc_history import errors, limits
from svc_history.conversations import Conversations, Target
from svc_history.model import (
    AUTHORS,
    STATES,
    Conversation,
    EventLog,
    Message,
    Page,
    Placed,
    Usage,
    now,
    order_key,
    time_ordered_id,
)
from svc_history.paging import PageTokens, bad_token
from svc_history.settings import HistorySettings
from svc_history.store import Claim, Stores
from svc_history.store.payloads import message_from, message_payload
from svc_history.store.requests import append_scope
from svc_history.tree import Tree

ACTIVE_PATH, ALL = "active_path", "all"


@dataclass(frozen=True)
class MessageDraft:
    """What AppendMessage writes; ids are already parsed from their names."""

    message_id: str
    parent_id: str
    author: str
    text: str
    model: str = ""
    state: str = "complete"
    usage: Usage | None = None
    turn: str = ""


class Messages:
    def __init__(
        self,
        settings: HistorySettings,
        stores: Stores,
        conversations: Conversations,
        tokens: PageTokens,
        events: EventLog,
    ) -> None:
        self._settings = settings
        self._stores = stores
        self._store = stores.messages
        self._conversations = conversations
        self._tokens = tokens
        self._events = events

    async def tree(self, conversation_id: str) -> Tree:
        return Tree(await self._store.nodes(conversation_id))

    async def read(self, tree: Tree, conversation_id: str, ids: list[str]) -> list[Placed]:
        """The messages ids name, in that order, with their places among their siblings."""
        found = await self._store.get_many(conversation_id, [(tree.node(i).bucket, i) for i in ids])
        return [Placed(found[i], tree.sibling_index(i), tree.sibling_count(i)) for i in ids if i in found]

    # List ---------------------------------------------------------------------------

    async def page(self, target: Target, view: str, size: int, token: str) -> Page:
        conversation = await self._conversations.load(target)
        listing = json.dumps(["messages", target.user_id, target.conversation_id, view])
        position = self._tokens.read(token, listing)
        tree = await self.tree(conversation.conversation_id)
        if view == ACTIVE_PATH:
            ids, next_position = _path_page(tree, conversation, position, size)
        else:
            ids, next_position = _time_page(tree, position, size)
        placed = await self.read(tree, conversation.conversation_id, ids)
        next_token = self._tokens.issue(listing, next_position) if next_position else ""
        return Page(list(placed), next_token)

    # Append -------------------------------------------------------------------------

    def _violations(self, draft: MessageDraft, request_id: str) -> list[FieldViolation]:
        found: list[FieldViolation] = []
        if draft.author not in AUTHORS:
            found.append(FieldViolation("message.author", "must be set"))
        if draft.state not in STATES:
            found.append(FieldViolation("message.state", "must be a known state"))
        found += limits.message_text("message.text", draft.text, draft.author, self._settings.limits)
        found += limits.model("message.model", draft.model, self._settings.limits)
        if draft.usage is not None and (draft.usage.input_tokens < 0 or draft.usage.output_tokens < 0):
            found.append(FieldViolation("message.usage", "token counts must not be negative"))
        if draft.parent_id == draft.message_id:
            found.append(FieldViolation("message.parent_message", "must not be the message itself"))
        if request_id and not _is_uuid(request_id):
            found.append(FieldViolation("request_id", "must be a UUID"))
        return found

    async def append(self, target: Target, draft: MessageDraft, request_id: str) -> Placed:
        violations = self._violations(draft, request_id)
        if violations:
            raise errors.bad_request(*violations)
        conversation_id = target.conversation_id
        key = request_id or f"message:{draft.message_id}"
        scope = append_scope(conversation_id, key)
        # Everything the decision needs, in one round trip.
        conversation, earlier, parent, itself, count = await _together(
            self._conversations.load(target),
            self._stores.requests.get(scope, key),
            self._store.node(conversation_id, draft.parent_id) if draft.parent_id else _none(),
            self._store.node(conversation_id, draft.message_id),
            self._store.count(conversation_id),
        )
        if earlier is not None:
            return await self._finish(conversation, message_from(earlier.payload), first=False)
        if draft.parent_id and parent is None:
            raise errors.bad_request(
                FieldViolation("message.parent_message", "must be a message of this conversation")
            )
        if itself is not None:
            raise errors.message_exists(_name(conversation, draft.message_id))
        limit = self._settings.limits.messages_per_conversation
        if count >= limit:
            raise errors.conversation_full(conversation.name, limit)
        message = Message(
            user_id=conversation.user_id,
            conversation_id=conversation_id,
            message_id=draft.message_id,
            parent_id=draft.parent_id,
            author=draft.author,
            text=draft.text,
            model=draft.model,
            state=draft.state,
            usage=draft.usage,
            turn=draft.turn,
            create_time=now(),
            bucket=count // self._settings.message_bucket_size,
        )
        claim = await self._stores.requests.claim(
            scope,
            key,
            conversation.user_id,
            Claim(message.message_id, message_payload(message), message.create_time, won=True),
            self._settings.request_id_ttl_s,
        )
        if not claim.won:
            return await self._finish(conversation, message_from(claim.payload), first=False)
        return await self._finish(conversation, message, first=True)

    async def _finish(self, conversation: Conversation, message: Message, *, first: bool) -> Placed:
        """Do whatever of steps 2-6 has not happened yet; return the message in place.

        first: this call won the claim, so nothing of it can have happened yet (and it
        counts the message); otherwise the skeleton says whether the writes are done.
        """
        conversation_id = conversation.conversation_id
        children = self._store.children(conversation_id, message.parent_id)
        if first or await self._store.node(conversation_id, message.message_id) is None:
            # The message and its event first (together), then its node: the node says
            # both are written, for a retry that finds this half-done.
            await _together(self._store.insert(message), self._events.message_created(message))
            await self._store.add_node(message)
            title = conversation.title
            if not title and message.author == "user":
                title = limits.title_from_text(message.text)
            touched = replace(
                conversation,
                active_message=message.message_id,
                update_time=now(),
                version=str(uuid.uuid4()),
                title=title,
            )
            siblings, *_ = await _together(
                children,
                self._touch(conversation, touched),
                self._store.counted(conversation_id) if first else _none(),
            )
        else:
            siblings = await children
        siblings.sort(key=order_key)
        index = siblings.index(message.message_id) if message.message_id in siblings else 0
        return Placed(message, index, max(len(siblings), 1))

    async def _touch(self, before: Conversation, after: Conversation) -> None:
        """The conversation's row, then its listing entry: an entry must never be newer than
        the row, or a listing would take it for stale and remove it."""
        await self._stores.conversations.touch(after)
        await self._conversations.moved(before, after)


async def _none() -> None:
    return None


async def _together(*steps: Awaitable[Any]) -> list[Any]:
    """Run steps at once; the first failure (in order) is raised once all have ended, so
    none is left running unobserved."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _name(conversation: Conversation, message_id: str) -> str:
    return f"{conversation.name}/messages/{message_id}"


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _path_page(
    tree: Tree, conversation: Conversation, position: dict[str, Any], size: int
) -> tuple[list[str], dict[str, Any]]:
    """A page of the path to the active message. The token keeps the active message of the
    first page, so a client paging while the conversation moves on reads one whole path."""
    anchor = position.get("a", conversation.active_message)
    start = position.get("i", 0)
    if not isinstance(anchor, str) or not isinstance(start, int) or start < 0:
        raise bad_token()
    path = tree.path_to(anchor) if anchor else []
    ids = path[start : start + size]
    more = start + size < len(path)
    return ids, ({"a": anchor, "i": start + size} if more else {})


def _time_page(tree: Tree, position: dict[str, Any], size: int) -> tuple[list[str], dict[str, Any]]:
    """A page of every message, oldest first, after the last message of the previous page."""
    ordered = tree.in_time_order()
    after = position.get("k")
    start = 0
    if after is not None:
        if not isinstance(after, str) or time_ordered_id(after) is None:
            raise bad_token()
        start = bisect_right([tree.key(m) for m in ordered], order_key(after))
    ids = ordered[start : start + size]
    more = start + size < len(ordered)
    return ids, ({"k": ids[-1]} if more and ids else {})

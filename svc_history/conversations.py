"""Conversations: create (idempotent by request_id), read, list, update with an etag, delete.

Ownership: a conversation is always looked up in the *caller's* partition, whoever the name
says owns it, and a name that does not name the caller is treated as missing after that
same lookup. Another user's conversation therefore answers exactly like a missing one:
NOT_FOUND, the same message, the same work.

Listing reads the `conversation_order` entries (pinned first, then newest update) and
checks each against its conversation's row: an entry that no longer matches (the
conversation changed or went) is skipped and removed. A page token is the last entry
returned, so conversations created while a client pages land before its position and
never shift what it has yet to see.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from parley_core.errors import FieldViolation
from svc_history import errors, limits
from svc_history.model import Conversation, EventLog, Page, now
from svc_history.paging import PageTokens, bad_token
from svc_history.settings import HistorySettings
from svc_history.store import Claim, OrderEntry, Stores, entry_of
from svc_history.store.payloads import conversation_from, conversation_payload
from svc_history.store.requests import append_scopes, conversation_scope, share_scope

_log = structlog.get_logger("svc_history")

#: The fields UpdateConversation may change.
UPDATABLE = frozenset(
    ("title", "model", "system_prompt", "folder", "tags", "pinned", "archived", "active_message")
)

#: Listing entries one ListConversations call reads at most, whatever its filters skip: a
#: page may come back short (with a token to go on) rather than scan without bound.
SCAN_BUDGET = 2_000


@dataclass(frozen=True)
class Target:
    """A conversation a caller named."""

    #: The caller, whose partition is searched.
    user_id: str
    conversation_id: str
    #: The name as the caller sent it (what NOT_FOUND repeats).
    name: str
    #: The name's user is the caller (`users/me` or their own id).
    own: bool


@dataclass(frozen=True)
class Draft:
    """What CreateConversation sets."""

    title: str = ""
    model: str = ""
    system_prompt: str = ""
    folder: str = ""
    tags: tuple[str, ...] = ()
    pinned: bool = False


@dataclass(frozen=True)
class Filters:
    folder: str = ""
    tag: str = ""
    show_archived: bool = False

    def admit(self, conversation: Conversation) -> bool:
        if conversation.archived and not self.show_archived:
            return False
        if self.folder and not (
            conversation.folder == self.folder or conversation.folder.startswith(self.folder + "/")
        ):
            return False
        return not self.tag or self.tag in conversation.tags


@dataclass(frozen=True)
class Removed:
    messages: int
    share_links: int


class Conversations:
    def __init__(
        self, settings: HistorySettings, stores: Stores, tokens: PageTokens, events: EventLog
    ) -> None:
        self._settings = settings
        self._limits = settings.limits
        self._stores = stores
        self._store = stores.conversations
        self._tokens = tokens
        self._events = events

    async def load(self, target: Target) -> Conversation:
        """The caller's conversation, or NOT_FOUND (also for another user's)."""
        conversation = await self._store.get(target.user_id, target.conversation_id)
        if conversation is None or not target.own:
            raise errors.not_found(target.name)
        return conversation

    # Create -------------------------------------------------------------------------

    def _violations(self, values: Mapping[str, Any]) -> list[FieldViolation]:
        found: list[FieldViolation] = []
        checks = {
            "title": limits.title,
            "model": limits.model,
            "system_prompt": limits.system_prompt,
            "folder": limits.folder,
        }
        for key, check in checks.items():
            if key in values:
                found += check(f"conversation.{key}", values[key], self._limits)
        if "tags" in values:
            found += limits.tags("conversation.tags", values["tags"], self._limits)
        return found

    async def create(self, user_id: str, draft: Draft, request_id: str) -> Conversation:
        violations = self._violations(draft.__dict__)
        if request_id and not _is_uuid(request_id):
            violations.append(FieldViolation("request_id", "must be a UUID"))
        if violations:
            raise errors.bad_request(*violations)
        moment = now()
        conversation = Conversation(
            user_id=user_id,
            conversation_id=str(uuid.uuid4()),
            title=draft.title,
            model=draft.model,
            system_prompt=draft.system_prompt,
            folder=draft.folder,
            tags=draft.tags,
            pinned=draft.pinned,
            archived=False,
            active_message="",
            create_time=moment,
            update_time=moment,
            version=str(uuid.uuid4()),
            request_id=request_id,
        )
        if request_id:
            claim = await self._stores.requests.claim(
                conversation_scope(user_id),
                request_id,
                user_id,
                Claim(conversation.conversation_id, conversation_payload(conversation), moment, won=True),
                self._settings.request_id_ttl_s,
            )
            if not claim.won:
                existing = await self._store.get(user_id, claim.resource_id)
                if existing is not None:
                    return existing
                # The first request has not finished (or crashed): finish its writes.
                conversation = conversation_from(claim.payload)
        await self._store.insert(conversation)
        await self._store.put_entry(user_id, entry_of(conversation))
        return conversation

    # List ---------------------------------------------------------------------------

    async def page(self, user_id: str, filters: Filters, size: int, token: str) -> Page:
        violations = limits.folder("folder", filters.folder, self._limits)
        if len(filters.tag) > self._limits.tag_chars:
            violations.append(FieldViolation("tag", f"must be at most {self._limits.tag_chars} characters"))
        if violations:
            raise errors.bad_request(*violations)
        listing = json.dumps(["conversations", user_id, filters.folder, filters.tag, filters.show_archived])
        after = _entry_at(self._tokens.read(token, listing))
        found: list[Conversation] = []
        stale: list[OrderEntry] = []
        scanned, exhausted = 0, False
        batch_size = min(max(size * 2, 50), 500)
        while len(found) < size and scanned < SCAN_BUDGET:
            batch = await self._store.entries(user_id, after, batch_size)
            rows = await self._store.get_many(user_id, [e.conversation_id for e in batch])
            consumed = 0
            for entry in batch:
                consumed += 1
                scanned += 1
                after = entry
                conversation = rows.get(entry.conversation_id)
                if conversation is None or not entry.matches(conversation):
                    stale.append(entry)
                elif filters.admit(conversation):
                    found.append(conversation)
                    if len(found) == size:
                        break
            if len(batch) < batch_size and consumed == len(batch):
                exhausted = True
                break
        if stale:
            await self._repair(user_id, stale)
        next_token = ""
        if not exhausted and after is not None:
            next_token = self._tokens.issue(
                listing,
                {"r": after.pinned_rank, "t": _ms(after.update_time), "c": after.conversation_id},
            )
        return Page(list(found), next_token)

    async def _repair(self, user_id: str, stale: Sequence[OrderEntry]) -> None:
        """Remove entries left behind by concurrent writers; a failure only costs a re-skip."""
        try:
            await asyncio.gather(*(self._store.drop_entry(user_id, entry) for entry in stale))
        except Exception as error:
            _log.warning("stale listing entries not removed", error_type=type(error).__name__)

    # Update -------------------------------------------------------------------------

    async def update(
        self, target: Target, changes: Mapping[str, Any], paths: Sequence[str], etag: str
    ) -> Conversation:
        """Apply the named fields of changes; paths are already checked against UPDATABLE."""
        violations = self._violations({p: changes[p] for p in paths if p in changes})
        if not paths:
            violations.append(FieldViolation("update_mask", "must name the fields to change"))
        if violations:
            raise errors.bad_request(*violations)
        current = await self.load(target)
        if etag and etag != current.etag:
            raise errors.etag_mismatch(current.name)
        values = {p: changes[p] for p in paths}
        active = values.get("active_message")
        moves = active is not None and active != current.active_message
        if moves and (
            not active or await self._stores.messages.node(current.conversation_id, active) is None
        ):
            raise errors.bad_request(
                FieldViolation("conversation.active_message", "must be a message of this conversation")
            )
        updated = replace(current, **values, update_time=now(), version=str(uuid.uuid4()))
        if not await self._store.replace(updated, current.version if etag else None):
            raise errors.etag_mismatch(current.name)
        await self.moved(current, updated)
        return updated

    async def moved(self, before: Conversation, after: Conversation) -> None:
        """Keep the listing order in step with a conversation's new pin or update time."""
        old, new = entry_of(before), entry_of(after)
        if old == new:
            return
        await self._store.put_entry(after.user_id, new)
        await self._store.drop_entry(before.user_id, old)

    # Delete -------------------------------------------------------------------------

    async def delete(self, target: Target, etag: str) -> None:
        current = await self.load(target)
        if etag and etag != current.etag:
            raise errors.etag_mismatch(current.name)
        await self.remove(current, announce=True)

    async def remove(self, conversation: Conversation, *, announce: bool) -> Removed:
        """Delete a conversation with its messages, share links and request ids.

        Its row goes last, so a crash half-way leaves a conversation that a repeated delete
        (or erasure) finds and finishes. announce: add ConversationDeleted to the outbox once
        the contents are gone (a user's erasure announces the user instead).
        """
        user_id, conversation_id = conversation.user_id, conversation.conversation_id
        messages = self._stores.messages
        nodes, count = await asyncio.gather(messages.nodes(conversation_id), messages.count(conversation_id))
        # Every bucket a message may be in: those the skeleton names, and those the count
        # says were in use (a crash can leave a row its skeleton entry never followed).
        last_bucket = count // self._settings.message_bucket_size + 1
        buckets = sorted({n.bucket for n in nodes} | set(range(last_bucket + 1)))
        links = await self._stores.share_links.delete_conversation(user_id, conversation_id)
        await messages.delete_conversation(conversation_id, buckets)
        await self._stores.requests.drop([*append_scopes(conversation_id), share_scope(conversation_id)])
        if conversation.request_id:
            await self._stores.requests.forget(conversation_scope(user_id), conversation.request_id)
        if announce:
            await self._events.conversation_deleted(conversation, now())
        await self._store.drop_entry(user_id, entry_of(conversation))
        await self._store.delete(user_id, conversation_id)
        return Removed(len(nodes), links)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _entry_at(position: Mapping[str, Any]) -> OrderEntry | None:
    if not position:
        return None
    rank, millis, conversation_id = position.get("r"), position.get("t"), position.get("c")
    if not isinstance(rank, int) or not isinstance(millis, int) or not isinstance(conversation_id, str):
        raise bad_token()
    if not _is_uuid(conversation_id):
        raise bad_token()
    return OrderEntry(rank, _EPOCH + timedelta(milliseconds=millis), conversation_id)

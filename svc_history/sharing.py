"""Share links: read-only public links to a snapshot of a conversation.

A link's snapshot is the path from the first message to the link's last message, fixed
when the link is made: messages are never edited (an edit is a new branch), so that path
never changes, and messages appended later are not on it. The token (256 random bits) is
shown once, in the answer to CreateShareLink, and stored only as its SHA-256; a retried
create (same request_id) gets the same token back from the claim, where it is kept sealed
(AES-GCM under a key derived from the service's secret) for as long as request ids are.

GetSharedConversation answers one way for an unknown, revoked or expired token (NOT_FOUND)
and reveals the title at share time and the snapshot's authors, texts and models: no name,
no id, no owner.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from parley_core.errors import FieldViolation
from svc_history import errors, limits
from svc_history.conversations import Conversations, Target
from svc_history.messages import Messages
from svc_history.model import Page, SharedSnapshot, ShareLink, digest, now, order_key
from svc_history.paging import PageTokens, bad_token, derive_key
from svc_history.passwords import hash_password, verify_password
from svc_history.settings import HistorySettings
from svc_history.store import Claim, Stores
from svc_history.store.payloads import share_from, share_payload
from svc_history.store.requests import share_scope

#: Longer than any token this service makes; a longer one is not looked up.
_MAX_TOKEN_CHARS = 128


class Guesses(Protocol):
    """Throttles password attempts (svc_history.throttle.GuessThrottle)."""

    async def check(self, share_link_id: str, client_address: str) -> None: ...


class ShareLinks:
    def __init__(
        self,
        settings: HistorySettings,
        stores: Stores,
        conversations: Conversations,
        messages: Messages,
        tokens: PageTokens,
        secret: bytes,
        guesses: Guesses,
    ) -> None:
        self._settings = settings
        self._stores = stores
        self._store = stores.share_links
        self._conversations = conversations
        self._messages = messages
        self._tokens = tokens
        self._seal_key = derive_key(secret, "share token seal v1")
        self._guesses = guesses

    # Owner's side -------------------------------------------------------------------

    async def create(
        self,
        target: Target,
        last_message: str,
        expire_time: datetime | None,
        password: str,
        request_id: str,
    ) -> ShareLink:
        moment = now()
        violations = limits.share_password("password", password, self._settings.limits)
        if expire_time is not None and expire_time <= moment:
            violations.append(FieldViolation("share_link.expire_time", "must be in the future"))
        if request_id and not _is_uuid(request_id):
            violations.append(FieldViolation("request_id", "must be a UUID"))
        if violations:
            raise errors.bad_request(*violations)
        conversation = await self._conversations.load(target)
        conversation_id = conversation.conversation_id
        scope = share_scope(conversation_id)
        if request_id:
            earlier = await self._stores.requests.get(scope, request_id)
            if earlier is not None:
                return await self._finish(*share_from(earlier.payload))
        tree = await self._messages.tree(conversation_id)
        last = last_message or conversation.active_message
        if not last:
            raise errors.nothing_to_share(conversation.name)
        if last not in tree:
            raise errors.bad_request(
                FieldViolation("share_link.last_message", "must be a message of this conversation")
            )
        if len(tree.path_to(last)) > self._settings.limits.shared_messages:
            raise errors.snapshot_too_long(self._settings.limits.shared_messages)
        token = secrets.token_urlsafe(32)
        link = ShareLink(
            user_id=conversation.user_id,
            conversation_id=conversation_id,
            share_link_id=str(uuid.uuid1()),
            last_message=last,
            expire_time=expire_time,
            password_hash=await hash_password(password) if password else "",
            create_time=moment,
            title=conversation.title,
            request_id=request_id,
        )
        sealed = self._seal(token, link.share_link_id)
        if request_id:
            claim = await self._stores.requests.claim(
                scope,
                request_id,
                link.user_id,
                Claim(link.share_link_id, share_payload(link, digest(token), sealed), moment, won=True),
                self._settings.request_id_ttl_s,
            )
            if not claim.won:
                return await self._finish(*share_from(claim.payload))
        return await self._finish(link, digest(token), sealed)

    async def _finish(self, link: ShareLink, token_hash: str, sealed: bytes) -> ShareLink:
        token = self._open(sealed, link.share_link_id)
        if await self._store.get(link.user_id, link.conversation_id, link.share_link_id) is None:
            await self._store.insert(link, token_hash)
        return replace(link, token=token)

    def _seal(self, token: str, share_link_id: str) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + AESGCM(self._seal_key).encrypt(nonce, token.encode(), share_link_id.encode())

    def _open(self, sealed: bytes, share_link_id: str) -> str:
        try:
            return AESGCM(self._seal_key).decrypt(sealed[:12], sealed[12:], share_link_id.encode()).decode()
        except (InvalidTag, ValueError):
            return ""  # sealed under another key: the link works, its token is not shown again

    async def page(self, target: Target, size: int, token: str) -> Page:
        await self._conversations.load(target)
        listing = json.dumps(["shareLinks", target.user_id, target.conversation_id])
        position = self._tokens.read(token, listing)
        links = [
            link for link, _ in await self._store.of_conversation(target.user_id, target.conversation_id)
        ]
        links.sort(key=lambda link: order_key(link.share_link_id), reverse=True)
        start = 0
        after = position.get("after")
        if after is not None:
            if not isinstance(after, str) or not _is_uuid(after):
                raise bad_token()
            bound = order_key(after)
            start = next(
                (i for i, link in enumerate(links) if order_key(link.share_link_id) < bound), len(links)
            )
        page = links[start : start + size]
        more = start + size < len(links)
        next_token = self._tokens.issue(listing, {"after": page[-1].share_link_id}) if more and page else ""
        return Page(list(page), next_token)

    async def delete(self, target: Target, share_link_id: str) -> None:
        """Revoke a link: its token stops working at once."""
        await self._conversations.load(target)
        found = await self._store.get(target.user_id, target.conversation_id, share_link_id)
        if found is None:
            raise errors.not_found(target.name)
        link, token_hash = found
        await self._store.delete(link, token_hash)
        if link.request_id:
            await self._stores.requests.forget(share_scope(link.conversation_id), link.request_id)

    # Reader's side ------------------------------------------------------------------

    async def open(self, token: str, password: str, client_address: str) -> SharedSnapshot:
        if not token or len(token) > _MAX_TOKEN_CHARS:
            raise errors.share_link_unavailable()
        link = await self._store.by_token(digest(token))
        if link is None or link.expired(now()):
            raise errors.share_link_unavailable()
        if link.password_hash:
            await self._guesses.check(link.share_link_id, client_address)
            if not await verify_password(link.password_hash, password):
                raise errors.share_password_invalid()
        if await self._stores.conversations.get(link.user_id, link.conversation_id) is None:
            raise errors.share_link_unavailable()
        tree = await self._messages.tree(link.conversation_id)
        placed = await self._messages.read(tree, link.conversation_id, tree.path_to(link.last_message))
        await self._store.viewed(link)
        return SharedSnapshot(link.title, [p.message for p in placed], link.create_time)


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True

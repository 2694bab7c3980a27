"""The wire layer of svc_history: requests in, domain calls, responses out.

Names are parsed and checked here; every name that points under another user is passed on
as "not the caller's" (`Target.own`), and the domain answers it exactly like a missing
resource after the same lookup (docs/adr/0008-history.md).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from parley.common.v1 import common_pb2
from parley.history.v1 import history_pb2 as pb
from parley_core.auth import Principal, current_principal, require_scope, require_service
from parley_core.errors import FieldViolation, RpcError
from parley_core.paging import page_size
from parley_core.servicer import add_servicer
from parley_core.wire import client_address, from_timestamp, parse_name, timestamp
from svc_history import errors
from svc_history.conversations import UPDATABLE, Conversations, Draft, Filters, Target
from svc_history.messages import ACTIVE_PATH, ALL, MessageDraft, Messages
from svc_history.model import (
    Conversation,
    Placed,
    ShareLink,
    Usage,
    message_name,
    time_ordered_id,
)
from svc_history.search.index import Mode
from svc_history.search.searching import Search
from svc_history.settings import HistorySettings
from svc_history.sharing import ShareLinks
from svc_history.user_data import Header, UserData

SERVICE = pb.DESCRIPTOR.services_by_name["HistoryService"]


def _method(name: str) -> str:
    return f"/{SERVICE.full_name}/{name}"


#: Callable without an access token.
PUBLIC_METHODS = frozenset({_method("GetSharedConversation")})
#: Callable only with a service token (and the user's token alongside).
INTERNAL_METHODS = frozenset({_method("AppendMessage")})
#: The services that may append messages.
APPENDERS = ("svc_router",)

_AUTHORS = {pb.AUTHOR_USER: "user", pb.AUTHOR_ASSISTANT: "assistant", pb.AUTHOR_SYSTEM: "system"}
_AUTHOR_ENUMS = {name: value for value, name in _AUTHORS.items()}
_STATES = {
    pb.MESSAGE_STATE_UNSPECIFIED: "complete",
    pb.MESSAGE_STATE_COMPLETE: "complete",
    pb.MESSAGE_STATE_CANCELLED: "cancelled",
    pb.MESSAGE_STATE_FAILED: "failed",
}
_STATE_ENUMS = {"complete": pb.MESSAGE_STATE_COMPLETE, "cancelled": pb.MESSAGE_STATE_CANCELLED,
                "failed": pb.MESSAGE_STATE_FAILED}  # fmt: skip

_MODES: dict[int, Mode] = {
    pb.SEARCH_MODE_UNSPECIFIED: "hybrid",
    pb.SEARCH_MODE_FULL_TEXT: "full_text",
    pb.SEARCH_MODE_SEMANTIC: "semantic",
    pb.SEARCH_MODE_HYBRID: "hybrid",
}

_VIEWS = (pb.MESSAGE_VIEW_UNSPECIFIED, pb.MESSAGE_VIEW_ACTIVE_PATH, pb.MESSAGE_VIEW_ALL)

_USER = "users/{user}"
_CONVERSATION = "users/{user}/conversations/{conversation}"
_MESSAGE = "users/{user}/conversations/{conversation}/messages/{message}"
_TURN = "users/{user}/conversations/{conversation}/turns/{turn}"
_SHARE_LINK = "users/{user}/conversations/{conversation}/shareLinks/{share_link}"

Context = grpc.aio.ServicerContext[Any, Any]


class HistoryServiceServicer:
    """parley.history.v1.HistoryService."""

    def __init__(
        self,
        settings: HistorySettings,
        conversations: Conversations,
        messages: Messages,
        share_links: ShareLinks,
        user_data: UserData,
        search: Search,
    ) -> None:
        self._settings = settings
        self._search = search
        self._conversations = conversations
        self._messages = messages
        self._share_links = share_links
        self._user_data = user_data

    # Conversations ------------------------------------------------------------------

    async def CreateConversation(
        self, request: pb.CreateConversationRequest, context: Context
    ) -> pb.CreateConversationResponse:
        principal = _caller("history.write")
        user_id = _own_user(principal, request.parent, "parent")
        wanted = request.conversation
        draft = Draft(
            title=wanted.title,
            model=wanted.model,
            system_prompt=wanted.system_prompt,
            folder=wanted.folder,
            tags=tuple(wanted.tags),
            pinned=wanted.pinned,
        )
        conversation = await self._conversations.create(user_id, draft, request.request_id)
        return pb.CreateConversationResponse(conversation=_conversation(conversation))

    async def GetConversation(
        self, request: pb.GetConversationRequest, context: Context
    ) -> pb.GetConversationResponse:
        target = _conversation_target(_caller("history.read"), request.name, "name")
        return pb.GetConversationResponse(conversation=_conversation(await self._conversations.load(target)))

    async def ListConversations(
        self, request: pb.ListConversationsRequest, context: Context
    ) -> pb.ListConversationsResponse:
        principal = _caller("history.read")
        size = page_size(request.page_size, 50, 200)
        user_id = _own_user(principal, request.parent, "parent")
        filters = Filters(request.folder, request.tag, request.show_archived)
        page = await self._conversations.page(user_id, filters, size, request.page_token)
        found = [_conversation(c) for c in page.items if isinstance(c, Conversation)]
        return pb.ListConversationsResponse(conversations=found, next_page_token=page.next_token)

    async def UpdateConversation(
        self, request: pb.UpdateConversationRequest, context: Context
    ) -> pb.UpdateConversationResponse:
        principal = _caller("history.write")
        wanted = request.conversation
        target = _conversation_target(principal, wanted.name, "conversation.name")
        paths = list(dict.fromkeys(request.update_mask.paths))
        violations = [
            FieldViolation("update_mask", f"{path!r} cannot be updated; use {', '.join(sorted(UPDATABLE))}")
            for path in paths
            if path not in UPDATABLE
        ]
        changes: dict[str, Any] = {
            "title": wanted.title,
            "model": wanted.model,
            "system_prompt": wanted.system_prompt,
            "folder": wanted.folder,
            "tags": tuple(wanted.tags),
            "pinned": wanted.pinned,
            "archived": wanted.archived,
        }
        if "active_message" in paths:
            active, found = _message_in(
                principal, target, wanted.active_message, "conversation.active_message"
            )
            violations += found
            changes["active_message"] = active
        if violations:
            raise errors.bad_request(*violations)
        updated = await self._conversations.update(target, changes, paths, wanted.etag)
        return pb.UpdateConversationResponse(conversation=_conversation(updated))

    async def DeleteConversation(
        self, request: pb.DeleteConversationRequest, context: Context
    ) -> pb.DeleteConversationResponse:
        target = _conversation_target(_caller("history.write"), request.name, "name")
        await self._conversations.delete(target, request.etag)
        return pb.DeleteConversationResponse()

    # Messages -----------------------------------------------------------------------

    async def ListMessages(
        self, request: pb.ListMessagesRequest, context: Context
    ) -> pb.ListMessagesResponse:
        principal = _caller("history.read")
        size = page_size(request.page_size, 100, 500)
        target = _conversation_target(principal, request.parent, "parent")
        if request.view not in (
            pb.MESSAGE_VIEW_UNSPECIFIED,
            pb.MESSAGE_VIEW_ACTIVE_PATH,
            pb.MESSAGE_VIEW_ALL,
        ):
            raise errors.bad_request(FieldViolation("view", "must be a known view"))
        view = ALL if request.view == pb.MESSAGE_VIEW_ALL else ACTIVE_PATH
        page = await self._messages.page(target, view, size, request.page_token)
        found = [_message(p) for p in page.items if isinstance(p, Placed)]
        return pb.ListMessagesResponse(messages=found, next_page_token=page.next_token)

    async def AppendMessage(
        self, request: pb.AppendMessageRequest, context: Context
    ) -> pb.AppendMessageResponse:
        principal = current_principal()
        require_service(principal, *APPENDERS)
        target = _conversation_target(principal, request.parent, "parent")
        wanted = request.message
        violations: list[FieldViolation] = []
        message_id, found = _message_in(principal, target, wanted.name, "message.name")
        violations += found
        parent_id = ""
        if wanted.parent_message:
            parent_id, found = _message_in(principal, target, wanted.parent_message, "message.parent_message")
            violations += found
        turn = ""
        if wanted.turn:
            turn, found = _turn_in(principal, target, wanted.turn)
            violations += found
        if wanted.state not in _STATES:
            violations.append(FieldViolation("message.state", "must be a known state"))
        if violations:
            raise errors.bad_request(*violations)
        draft = MessageDraft(
            message_id=message_id,
            parent_id=parent_id,
            author=_AUTHORS.get(wanted.author, ""),
            text=wanted.text,
            model=wanted.model,
            state=_STATES[wanted.state],
            usage=Usage(wanted.usage.input_tokens, wanted.usage.output_tokens)
            if wanted.HasField("usage")
            else None,
            turn=turn,
        )
        placed = await self._messages.append(target, draft, request.request_id)
        return pb.AppendMessageResponse(message=_message(placed))

    # Share links --------------------------------------------------------------------

    async def CreateShareLink(
        self, request: pb.CreateShareLinkRequest, context: Context
    ) -> pb.CreateShareLinkResponse:
        principal = _caller("history.write")
        target = _conversation_target(principal, request.parent, "parent")
        wanted = request.share_link
        last = ""
        if wanted.last_message:
            last, found = _message_in(principal, target, wanted.last_message, "share_link.last_message")
            if found:
                raise errors.bad_request(*found)
        link = await self._share_links.create(
            target,
            last,
            from_timestamp(wanted.expire_time, wanted.HasField("expire_time")),
            request.password,
            request.request_id,
        )
        return pb.CreateShareLinkResponse(share_link=_share_link(link))

    async def ListShareLinks(
        self, request: pb.ListShareLinksRequest, context: Context
    ) -> pb.ListShareLinksResponse:
        principal = _caller("history.read")
        size = page_size(request.page_size, 50, 200)
        target = _conversation_target(principal, request.parent, "parent")
        page = await self._share_links.page(target, size, request.page_token)
        links = [_share_link(link) for link in page.items if isinstance(link, ShareLink)]
        return pb.ListShareLinksResponse(share_links=links, next_page_token=page.next_token)

    async def DeleteShareLink(
        self, request: pb.DeleteShareLinkRequest, context: Context
    ) -> pb.DeleteShareLinkResponse:
        principal = _caller("history.write")
        ids = parse_name(request.name, _SHARE_LINK, "name")
        link_id = _uuid(ids["share_link"])
        conversation_id = _uuid(ids["conversation"])
        if link_id is None or conversation_id is None:
            raise errors.bad_request(FieldViolation("name", f"must name a share link: {_SHARE_LINK}"))
        target = Target(principal.user_id, conversation_id, request.name, _is_caller(principal, ids["user"]))
        await self._share_links.delete(target, link_id)
        return pb.DeleteShareLinkResponse()

    async def GetSharedConversation(
        self, request: pb.GetSharedConversationRequest, context: Context
    ) -> pb.GetSharedConversationResponse:
        snapshot = await self._share_links.open(
            request.token, request.password, client_address(context, self._settings.trusted_proxies)
        )
        return pb.GetSharedConversationResponse(
            title=snapshot.title,
            messages=[
                pb.SharedMessage(author=_AUTHOR_ENUMS.get(m.author, pb.AUTHOR_UNSPECIFIED), text=m.text,
                                 model=m.model)
                for m in snapshot.messages
            ],
            share_time=timestamp(snapshot.share_time),
        )  # fmt: skip

    # Search ---------------------------------------------------------------------------

    async def SearchMessages(
        self, request: pb.SearchMessagesRequest, context: Context
    ) -> pb.SearchMessagesResponse:
        principal = _caller("history.read")
        user_id = _own_user(principal, request.parent, "parent")
        size = page_size(request.page_size, 20, 100)
        violations = self._search.check_query(request.query)
        mode = _MODES.get(request.mode)
        if mode is None:
            violations.append(FieldViolation("mode", f"unknown mode {request.mode}"))
        if violations or mode is None:
            raise errors.bad_request(*violations)
        page = await self._search.search(
            user_id, request.query, mode, size, request.page_token, time_left_s=context.time_remaining()
        )
        return pb.SearchMessagesResponse(
            hits=[
                pb.SearchHit(
                    message=_message(hit.placed),
                    conversation_title=hit.conversation_title,
                    snippet=hit.snippet.text,
                    score=hit.score,
                    snippet_matches=[pb.TextRange(start=a, end=b) for a, b in hit.snippet.matches],
                )
                for hit in page.hits
            ],
            next_page_token=page.next_token,
        )

    # A user's data ------------------------------------------------------------------

    async def ExportUserData(
        self, request: pb.ExportUserDataRequest, context: Context
    ) -> AsyncIterator[pb.ExportUserDataResponse]:
        principal = _caller("history.read")
        user_id = _own_user(principal, request.name, "name")
        async for record in self._user_data.export(user_id):
            if isinstance(record, Header):
                yield pb.ExportUserDataResponse(
                    header=pb.ExportHeader(
                        user=f"users/{record.user_id}",
                        export_time=timestamp(record.export_time),
                        format_version=record.format_version,
                    )
                )
            elif isinstance(record, Conversation):
                yield pb.ExportUserDataResponse(conversation=_conversation(record))
            elif isinstance(record, Placed):
                yield pb.ExportUserDataResponse(message=_message(record))
            else:
                yield pb.ExportUserDataResponse(share_link=_share_link(record))

    async def DeleteUserData(
        self, request: pb.DeleteUserDataRequest, context: Context
    ) -> pb.DeleteUserDataResponse:
        principal = _caller("account")
        if principal.api_key_id:
            raise errors.needs_password_session("DeleteUserData")
        user_id = _own_user(principal, request.name, "name")
        if request.confirm not in (request.name, principal.user_name):
            raise errors.bad_request(FieldViolation("confirm", "must repeat the user's name"))
        receipt = await self._user_data.erase(user_id)
        return pb.DeleteUserDataResponse(
            deleted_conversations=receipt.deleted_conversations,
            deleted_messages=receipt.deleted_messages,
            deleted_share_links=receipt.deleted_share_links,
            delete_time=timestamp(receipt.delete_time),
            event_id=receipt.event_id,
        )


# Names ----------------------------------------------------------------------------------


def _caller(scope: str) -> Principal:
    """The caller, when its token carries scope.

    The router running a chat turn for a key that may only chat ("chat" scope) reads and
    writes the conversation of that turn: a chat needs its history. The key itself,
    without the router, still gets no further than its scopes.
    """
    principal = current_principal()
    if principal.service in APPENDERS and "chat" in principal.scopes:
        return principal
    require_scope(principal, scope)
    return principal


def _is_caller(principal: Principal, user: str) -> bool:
    return user in ("me", principal.user_id)


def _uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _own_user(principal: Principal, name: str, field: str) -> str:
    """The caller's id for `users/me` or their own name; another user is NOT_FOUND (for
    this caller, no other user's history exists)."""
    ids = parse_name(name, _USER, field)
    if not _is_caller(principal, ids["user"]):
        raise errors.not_found(name)
    return principal.user_id


def _conversation_target(principal: Principal, name: str, field: str) -> Target:
    ids = parse_name(name, _CONVERSATION, field)
    conversation_id = _uuid(ids["conversation"])
    if conversation_id is None:
        raise errors.bad_request(FieldViolation(field, "must name a conversation this API returned"))
    return Target(principal.user_id, conversation_id, name, _is_caller(principal, ids["user"]))


def _message_in(
    principal: Principal, target: Target, name: str, field: str
) -> tuple[str, list[FieldViolation]]:
    """The id of a message named under target's conversation (a time-ordered UUID)."""
    wrong = [FieldViolation(field, f"must be a message of the conversation: {_MESSAGE}, a UUID v1 or v7 id")]
    try:
        ids = parse_name(name, _MESSAGE, field)
    except RpcError:
        return "", wrong
    parsed = time_ordered_id(ids["message"])
    if parsed is None or not _same_conversation(principal, target, ids):
        return "", wrong
    return str(parsed), []


def _same_conversation(principal: Principal, target: Target, ids: dict[str, str]) -> bool:
    """ids (of a name under a conversation) name target's conversation, as target named it."""
    same_owner = _is_caller(principal, ids["user"]) == target.own
    return same_owner and _uuid(ids["conversation"]) == target.conversation_id


def _turn_in(principal: Principal, target: Target, name: str) -> tuple[str, list[FieldViolation]]:
    """A turn of target's conversation, named with the user's id (never `users/me`)."""
    wrong = [FieldViolation("message.turn", f"must be a turn of the conversation: {_TURN}")]
    try:
        ids = parse_name(name, _TURN, "message.turn")
    except RpcError:
        return "", wrong
    if not _same_conversation(principal, target, ids):
        return "", wrong
    return f"users/{principal.user_id}/conversations/{target.conversation_id}/turns/{ids['turn']}", []


# Domain -> wire -------------------------------------------------------------------------


def _message_name(user_id: str, conversation_id: str, message_id: str) -> str:
    return message_name(user_id, conversation_id, message_id) if message_id else ""


def _conversation(c: Conversation) -> pb.Conversation:
    return pb.Conversation(
        name=c.name,
        title=c.title,
        model=c.model,
        system_prompt=c.system_prompt,
        folder=c.folder,
        tags=list(c.tags),
        pinned=c.pinned,
        archived=c.archived,
        active_message=message_name(c.user_id, c.conversation_id, c.active_message)
        if c.active_message
        else "",
        create_time=timestamp(c.create_time),
        update_time=timestamp(c.update_time),
        etag=c.etag,
    )


def _message(placed: Placed) -> pb.Message:
    m = placed.message
    return pb.Message(
        name=m.name,
        parent_message=_message_name(m.user_id, m.conversation_id, m.parent_id),
        author=_AUTHOR_ENUMS.get(m.author, pb.AUTHOR_UNSPECIFIED),
        text=m.text,
        model=m.model,
        state=_STATE_ENUMS.get(m.state, pb.MESSAGE_STATE_COMPLETE),
        usage=common_pb2.TokenUsage(input_tokens=m.usage.input_tokens, output_tokens=m.usage.output_tokens)
        if m.usage
        else None,
        turn=m.turn,
        create_time=timestamp(m.create_time),
        sibling_count=placed.sibling_count,
        sibling_index=placed.sibling_index,
    )


def _share_link(link: ShareLink) -> pb.ShareLink:
    return pb.ShareLink(
        name=link.name,
        token=link.token,
        last_message=message_name(link.user_id, link.conversation_id, link.last_message),
        expire_time=timestamp(link.expire_time),
        password_protected=bool(link.password_hash),
        create_time=timestamp(link.create_time),
        view_count=link.view_count,
    )


async def register(server: grpc.aio.Server, servicer: HistoryServiceServicer) -> Sequence[str]:
    """Add svc_history's servicers to server; the names are served by health and reflection."""
    return [add_servicer(server, SERVICE, servicer)]

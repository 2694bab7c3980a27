"""svc_history as the router calls it: always with its service token and the user's beside it.

Every call carries `ServiceTokenSource.metadata(user token)` (docs/adr/0009), so history
checks the user's ownership exactly as on the user's own call, and AppendMessage (internal)
knows svc_router writes. A refusal from history (NOT_FOUND, PERMISSION_DENIED,
INVALID_ARGUMENT, ...) comes back to the router's caller with history's code, reason and
message; history being down is UNAVAILABLE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import grpc
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2

from parley.common.v1 import common_pb2
from parley.history.v1 import history_pb2 as pb
from parley_core.auth import ServiceTokenSource
from parley_core.errors import FieldViolation, RpcError, details_of
from parley_core.stubs import history_stub

if TYPE_CHECKING:
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub

Author = Literal["user", "assistant", "system"]
MessageState = Literal["complete", "cancelled", "failed"]

_AUTHORS: dict[int, Author] = {
    pb.AUTHOR_USER: "user",
    pb.AUTHOR_ASSISTANT: "assistant",
    pb.AUTHOR_SYSTEM: "system",
}
_AUTHOR_ENUMS: dict[Author, pb.Author] = {
    "user": pb.AUTHOR_USER,
    "assistant": pb.AUTHOR_ASSISTANT,
    "system": pb.AUTHOR_SYSTEM,
}
_STATE_ENUMS: dict[MessageState, pb.MessageState] = {
    "complete": pb.MESSAGE_STATE_COMPLETE,
    "cancelled": pb.MESSAGE_STATE_CANCELLED,
    "failed": pb.MESSAGE_STATE_FAILED,
}
#: Messages per ListMessages page when the router reads a conversation's active path.
_PAGE = 500


@dataclass(frozen=True)
class ConversationInfo:
    name: str
    title: str
    #: `models/{model}`, or "" for the catalog's default.
    model: str
    system_prompt: str
    active_message: str


@dataclass(frozen=True)
class PathMessage:
    name: str
    author: Author
    text: str


def _refusal(error: grpc.aio.AioRpcError) -> RpcError:
    """history's refusal as the router's own error, with its reason and field violations."""
    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return RpcError(
            grpc.StatusCode.UNAVAILABLE,
            "HISTORY_UNAVAILABLE",
            "conversation history is unavailable; retry shortly",
            retry_after_s=1.0,
        )
    reason, violations = "HISTORY_REFUSED", []
    for detail in details_of(error):
        if isinstance(detail, error_details_pb2.ErrorInfo):
            reason = detail.reason
        elif isinstance(detail, error_details_pb2.BadRequest):
            violations = [FieldViolation(v.field, v.description) for v in detail.field_violations]
    return RpcError(code, reason, error.details() or "refused by history", field_violations=violations)


class HistoryClient:
    def __init__(self, channel: grpc.aio.Channel, identity: ServiceTokenSource, *, timeout_s: float) -> None:
        self._stub: HistoryServiceAsyncStub = history_stub(channel)
        self._identity = identity
        self._timeout_s = timeout_s

    async def _metadata(self, user_token: str) -> tuple[tuple[str, str], ...]:
        return await self._identity.metadata(user_token)

    async def get_conversation(self, user_token: str, name: str) -> ConversationInfo:
        try:
            reply = await self._stub.GetConversation(
                pb.GetConversationRequest(name=name),
                metadata=await self._metadata(user_token),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            raise _refusal(error) from None
        return _info(reply.conversation)

    async def create_conversation(self, user_token: str, model: str, request_id: str) -> ConversationInfo:
        try:
            reply = await self._stub.CreateConversation(
                pb.CreateConversationRequest(
                    parent="users/me", conversation=pb.Conversation(model=model), request_id=request_id
                ),
                metadata=await self._metadata(user_token),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            raise _refusal(error) from None
        return _info(reply.conversation)

    async def update(self, user_token: str, name: str, *, title: str = "", active_message: str = "") -> None:
        """Set a conversation's title or active message (those given), without an etag."""
        values = {"title": title, "active_message": active_message}
        paths = sorted(path for path, value in values.items() if value)
        try:
            await self._stub.UpdateConversation(
                pb.UpdateConversationRequest(
                    conversation=pb.Conversation(name=name, title=title, active_message=active_message),
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                ),
                metadata=await self._metadata(user_token),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            raise _refusal(error) from None

    async def active_path(self, user_token: str, conversation: str) -> list[PathMessage]:
        """The conversation's active path, oldest first."""
        found: list[PathMessage] = []
        token = ""
        metadata = await self._metadata(user_token)
        while True:
            try:
                reply = await self._stub.ListMessages(
                    pb.ListMessagesRequest(
                        parent=conversation,
                        page_size=_PAGE,
                        page_token=token,
                        view=pb.MESSAGE_VIEW_ACTIVE_PATH,
                    ),
                    metadata=metadata,
                    timeout=self._timeout_s,
                )
            except grpc.aio.AioRpcError as error:
                raise _refusal(error) from None
            found += [
                PathMessage(m.name, _AUTHORS.get(m.author, "user"), m.text)
                for m in reply.messages
                if m.author in _AUTHORS
            ]
            token = reply.next_page_token
            if not token:
                return found

    async def append(
        self,
        user_token: str,
        conversation: str,
        *,
        name: str,
        parent: str,
        author: Author,
        text: str,
        request_id: str,
        model: str = "",
        state: MessageState = "complete",
        usage: tuple[int, int] | None = None,
        turn: str = "",
    ) -> str:
        """Store a message (idempotent by request_id); the stored message's name."""
        message = pb.Message(
            name=name,
            parent_message=parent,
            author=_AUTHOR_ENUMS[author],
            text=text,
            model=model,
            state=_STATE_ENUMS[state],
            turn=turn,
        )
        if usage is not None:
            message.usage.CopyFrom(common_pb2.TokenUsage(input_tokens=usage[0], output_tokens=usage[1]))
        try:
            reply = await self._stub.AppendMessage(
                pb.AppendMessageRequest(parent=conversation, message=message, request_id=request_id),
                metadata=await self._metadata(user_token),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            raise _refusal(error) from None
        return reply.message.name


def _info(conversation: pb.Conversation) -> ConversationInfo:
    return ConversationInfo(
        name=conversation.name,
        title=conversation.title,
        model=conversation.model,
        system_prompt=conversation.system_prompt,
        active_message=conversation.active_message,
    )

"""A second user reaches nothing of the first: every method answers NOT_FOUND, exactly as
for a resource that does not exist, and changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from parley.history.v1 import history_pb2 as pb
from tests.integration.history.helpers import Person, all_messages, append, message_id, new_conversation
from tests.integration.session.helpers import failure

if TYPE_CHECKING:
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub

pytestmark = pytest.mark.integration


def _calls(
    history: HistoryServiceAsyncStub, caller: Person, user: str, conversation: str, link: str
) -> dict[str, Callable[[], Awaitable[Any]]]:
    """Every method, aimed at a user's resources (the names may or may not exist)."""
    md = caller.md
    message = f"{conversation}/messages/{message_id()}"
    mask = field_mask_pb2.FieldMask(paths=["title"])
    return {
        "CreateConversation": lambda: history.CreateConversation(
            pb.CreateConversationRequest(parent=user, conversation=pb.Conversation(title="x")), metadata=md
        ),
        "GetConversation": lambda: history.GetConversation(
            pb.GetConversationRequest(name=conversation), metadata=md
        ),
        "ListConversations": lambda: history.ListConversations(
            pb.ListConversationsRequest(parent=user), metadata=md
        ),
        "SearchMessages": lambda: history.SearchMessages(
            pb.SearchMessagesRequest(parent=user, query="secret", mode=pb.SEARCH_MODE_FULL_TEXT), metadata=md
        ),
        "UpdateConversation": lambda: history.UpdateConversation(
            pb.UpdateConversationRequest(
                conversation=pb.Conversation(name=conversation, title="x"), update_mask=mask
            ),
            metadata=md,
        ),
        "DeleteConversation": lambda: history.DeleteConversation(
            pb.DeleteConversationRequest(name=conversation), metadata=md
        ),
        "ListMessages": lambda: history.ListMessages(
            pb.ListMessagesRequest(parent=conversation), metadata=md
        ),
        "AppendMessage": lambda: history.AppendMessage(
            pb.AppendMessageRequest(
                parent=conversation, message=pb.Message(name=message, author=pb.AUTHOR_USER, text="x")
            ),
            metadata=caller.router,
        ),
        "CreateShareLink": lambda: history.CreateShareLink(
            pb.CreateShareLinkRequest(parent=conversation), metadata=md
        ),
        "ListShareLinks": lambda: history.ListShareLinks(
            pb.ListShareLinksRequest(parent=conversation), metadata=md
        ),
        "DeleteShareLink": lambda: history.DeleteShareLink(pb.DeleteShareLinkRequest(name=link), metadata=md),
        "ExportUserData": lambda: _drain(
            history.ExportUserData(pb.ExportUserDataRequest(name=user), metadata=md)
        ),
        "DeleteUserData": lambda: history.DeleteUserData(
            pb.DeleteUserDataRequest(name=user, confirm=user), metadata=md
        ),
    }


async def _drain(stream: Any) -> list[Any]:
    return [record async for record in stream]


async def test_every_method_answers_not_found_for_another_user_s_resources(
    history: HistoryServiceAsyncStub, alice: Person, bob: Person
) -> None:
    conversation = await new_conversation(history, alice, title="Private")
    first = await append(history, alice, conversation.name, "my secret")
    link = (
        await history.CreateShareLink(pb.CreateShareLinkRequest(parent=conversation.name), metadata=alice.md)
    ).share_link
    missing_conversation = f"{alice.name}/conversations/{uuid.uuid4()}"
    missing_link = f"{missing_conversation}/shareLinks/{uuid.uuid1()}"
    before = await history.GetConversation(
        pb.GetConversationRequest(name=conversation.name), metadata=alice.md
    )

    aimed = _calls(history, bob, alice.name, conversation.name, link.name)
    # Bob's view of a conversation and a link that never existed under Alice's name.
    void = _calls(history, bob, alice.name, missing_conversation, missing_link)

    assert set(aimed) == {m.name for m in pb.DESCRIPTOR.services_by_name["HistoryService"].methods} - {
        "GetSharedConversation",
    }
    for method, call in aimed.items():
        error = await failure(call())
        assert error.code() == grpc.StatusCode.NOT_FOUND, method
        expected = await failure(void[method]())
        assert expected.code() == grpc.StatusCode.NOT_FOUND, method
        details = error.details() or ""
        assert details.endswith(" does not exist"), method
        same_for_missing = details.replace(link.name, missing_link)
        assert expected.details() == same_for_missing.replace(conversation.name, missing_conversation), method

    # Alice's data is untouched.
    after = await history.GetConversation(
        pb.GetConversationRequest(name=conversation.name), metadata=alice.md
    )
    assert after == before
    assert [m.name for m in await all_messages(history, alice, conversation.name)] == [first.name]
    shared = await history.GetSharedConversation(pb.GetSharedConversationRequest(token=link.token))
    assert [m.text for m in shared.messages] == ["my secret"]


async def test_a_conversation_id_of_another_user_under_one_s_own_name_is_not_found(
    history: HistoryServiceAsyncStub, alice: Person, bob: Person
) -> None:
    conversation = await new_conversation(history, alice)
    own_name = conversation.name.replace(alice.name, "users/me")

    error = await failure(history.GetConversation(pb.GetConversationRequest(name=own_name), metadata=bob.md))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == f"{own_name} does not exist"
    listed = await history.ListConversations(pb.ListConversationsRequest(parent="users/me"), metadata=bob.md)
    assert list(listed.conversations) == []

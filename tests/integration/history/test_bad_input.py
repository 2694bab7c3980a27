"""Bad input gets INVALID_ARGUMENT with field violations and changes nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from parley.history.v1 import history_pb2 as pb
from tests.integration.history.conftest import MESSAGE_CHARS
from tests.integration.history.helpers import Person, all_messages, append, message_id, new_conversation
from tests.integration.session.helpers import failure, field_violations

if TYPE_CHECKING:
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub

pytestmark = pytest.mark.integration


def _invalid(error: grpc.aio.AioRpcError) -> dict[str, str]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    return field_violations(error)


async def test_oversized_or_malformed_messages_are_refused_and_not_stored(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    conversation = await new_conversation(history, alice)
    c = conversation.name

    too_long = await failure(append(history, alice, c, "x" * (MESSAGE_CHARS + 1)))
    no_author = await failure(append(history, alice, c, "hi", author=pb.AUTHOR_UNSPECIFIED))
    random_id = await failure(
        append(history, alice, c, "hi", name=f"{c}/messages/0b9e2f4a-0d5c-4b8e-9f1a-2c3d4e5f6a7b")
    )
    elsewhere = await failure(
        append(
            history,
            alice,
            c,
            "hi",
            name=f"users/me/conversations/0b9e2f4a-0d5c-4b8e-9f1a-2c3d4e5f6a7b/messages/{message_id()}",
        )
    )
    orphan = await failure(append(history, alice, c, "hi", parent=f"{c}/messages/{message_id()}"))
    bad_request_id = await failure(append(history, alice, c, "hi", request_id="not-a-uuid"))

    assert set(_invalid(too_long)) == {"message.text"}
    assert set(_invalid(no_author)) == {"message.author"}
    assert set(_invalid(random_id)) == {"message.name"}
    assert set(_invalid(elsewhere)) == {"message.name"}
    assert set(_invalid(orphan)) == {"message.parent_message"}
    assert set(_invalid(bad_request_id)) == {"request_id"}
    assert await all_messages(history, alice, c) == []
    got = await history.GetConversation(pb.GetConversationRequest(name=c), metadata=alice.md)
    assert got.conversation == conversation


@pytest.mark.parametrize(
    "name",
    [
        "",
        "garbage",
        "users/me/conversations/not-a-uuid",
        "users/me/chats/0b9e2f4a-0d5c-4b8e-9f1a-2c3d4e5f6a7b",
        "users/me/conversations/../x",
    ],
)
async def test_invalid_names_are_invalid_argument(
    history: HistoryServiceAsyncStub, alice: Person, name: str
) -> None:
    error = await failure(history.GetConversation(pb.GetConversationRequest(name=name), metadata=alice.md))

    assert set(_invalid(error)) == {"name"}


async def test_negative_page_sizes_are_invalid_argument(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    conversation = await new_conversation(history, alice)

    for call in (
        history.ListConversations(
            pb.ListConversationsRequest(parent="users/me", page_size=-1), metadata=alice.md
        ),
        history.ListMessages(
            pb.ListMessagesRequest(parent=conversation.name, page_size=-1), metadata=alice.md
        ),
        history.ListShareLinks(
            pb.ListShareLinksRequest(parent=conversation.name, page_size=-1), metadata=alice.md
        ),
    ):
        assert set(_invalid(await failure(call))) == {"page_size"}


async def test_unknown_update_paths_and_bad_values_change_nothing(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    conversation = await new_conversation(history, alice, title="Keep")

    async def update(paths: list[str], **fields: Any) -> grpc.aio.AioRpcError:
        return await failure(
            history.UpdateConversation(
                pb.UpdateConversationRequest(
                    conversation=pb.Conversation(name=conversation.name, **fields),
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                ),
                metadata=alice.md,
            )
        )

    unknown = await update(["title", "create_time"], title="Changed")
    empty = await update([])
    too_many_tags = await update(["tags"], tags=[f"t{i}" for i in range(21)])
    long_title = await update(["title", "folder"], title="x" * 201, folder="/bad")
    no_such_message = await update(
        ["active_message"], active_message=f"{conversation.name}/messages/{message_id()}"
    )

    assert set(_invalid(unknown)) == {"update_mask"}
    assert set(_invalid(empty)) == {"update_mask"}
    assert set(_invalid(too_many_tags)) == {"conversation.tags"}
    assert set(_invalid(long_title)) == {"conversation.title", "conversation.folder"}
    assert set(_invalid(no_such_message)) == {"conversation.active_message"}
    got = await history.GetConversation(pb.GetConversationRequest(name=conversation.name), metadata=alice.md)
    assert got.conversation == conversation


async def test_a_bad_create_creates_nothing(history: HistoryServiceAsyncStub, alice: Person) -> None:
    error = await failure(
        history.CreateConversation(
            pb.CreateConversationRequest(
                parent="users/me",
                conversation=pb.Conversation(title="ok", tags=["x" * 41], model="has space"),
            ),
            metadata=alice.md,
        )
    )

    assert set(_invalid(error)) == {"conversation.tags[0]", "conversation.model"}
    listed = await history.ListConversations(
        pb.ListConversationsRequest(parent="users/me"), metadata=alice.md
    )
    assert list(listed.conversations) == []

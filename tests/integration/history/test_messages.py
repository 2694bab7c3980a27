"""Messages on real Cassandra: appends (internal, idempotent, concurrent), the tree, paging."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import field_mask_pb2

from parley.history.v1 import history_pb2 as pb
from svc_session.app import SessionApp
from tests.integration.history.conftest import BUCKET_SIZE, MESSAGE_LIMIT
from tests.integration.history.helpers import Person, all_messages, append, message_id, new_conversation
from tests.integration.session.helpers import failure, reason

if TYPE_CHECKING:
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub

pytestmark = pytest.mark.integration


async def test_a_hundred_concurrent_appends_are_all_listed_at_once(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    conversation = await new_conversation(history, alice, title="Busy")
    question = await append(history, alice, conversation.name, "Tell me something")

    answers = await asyncio.gather(
        *(
            append(
                history,
                alice,
                conversation.name,
                f"answer {i}",
                parent=question.name,
                author=pb.AUTHOR_ASSISTANT,
            )
            for i in range(100)
        )
    )
    listed = await all_messages(history, alice, conversation.name)

    assert {m.name for m in listed} == {question.name, *(a.name for a in answers)}
    assert len(listed) == 101
    below = [m for m in listed if m.parent_message == question.name]
    assert {m.sibling_count for m in below} == {100}
    assert sorted(m.sibling_index for m in below) == list(range(100))
    path = await all_messages(history, alice, conversation.name, view=pb.MESSAGE_VIEW_ACTIVE_PATH)
    assert len(path) == 2
    assert path[0].name == question.name
    assert path[1].name in {a.name for a in answers}
    # A hundred writers moved the listing entry at once; the listing still shows it once.
    listed_conversations = await history.ListConversations(
        pb.ListConversationsRequest(parent="users/me"), metadata=alice.md
    )
    assert [c.name for c in listed_conversations.conversations] == [conversation.name]
    got = await history.GetConversation(pb.GetConversationRequest(name=conversation.name), metadata=alice.md)
    assert listed_conversations.conversations[0] == got.conversation


async def test_all_view_pages_oldest_first_across_buckets(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    conversation = await new_conversation(history, alice)
    written: list[str] = []
    parent = ""
    for i in range(3 * BUCKET_SIZE + 2):
        message = await append(history, alice, conversation.name, f"m{i}", parent=parent)
        written.append(message.name)
        parent = message.name

    pages: list[list[str]] = []
    token = ""
    while True:
        page = await history.ListMessages(
            pb.ListMessagesRequest(
                parent=conversation.name, view=pb.MESSAGE_VIEW_ALL, page_size=5, page_token=token
            ),
            metadata=alice.md,
        )
        pages.append([m.name for m in page.messages])
        token = page.next_page_token
        if not token:
            break
    path = await all_messages(history, alice, conversation.name, view=pb.MESSAGE_VIEW_ACTIVE_PATH)

    assert [name for page in pages for name in page] == written
    assert all(len(page) == 5 for page in pages[:-1])
    assert [m.name for m in path] == written
    assert [m.text for m in path] == [f"m{i}" for i in range(len(written))]


async def test_the_same_request_id_gives_one_message_also_concurrently(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    conversation = await new_conversation(history, alice)
    request_id = str(uuid.uuid4())
    name = f"{conversation.name}/messages/{message_id()}"

    concurrent = await asyncio.gather(
        *(
            append(history, alice, conversation.name, "once", request_id=request_id, name=name)
            for _ in range(20)
        )
    )
    retry = await append(
        history, alice, conversation.name, "a retry with other text", request_id=request_id,
        name=f"{conversation.name}/messages/{message_id()}",
    )  # fmt: skip

    assert {m.name for m in concurrent} == {name}
    assert retry == concurrent[0]
    assert retry.text == "once"
    listed = await all_messages(history, alice, conversation.name)
    assert [m.name for m in listed] == [name]
    got = await history.GetConversation(pb.GetConversationRequest(name=conversation.name), metadata=alice.md)
    assert got.conversation.active_message == name


async def test_edit_and_regenerate_make_branches_and_switching_moves_the_path(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    conversation = await new_conversation(history, alice)
    c = conversation.name
    question = await append(history, alice, c, "What is 2+2?")
    answer = await append(history, alice, c, "5", parent=question.name, author=pb.AUTHOR_ASSISTANT)
    regenerated = await append(history, alice, c, "4", parent=question.name, author=pb.AUTHOR_ASSISTANT)
    edited = await append(history, alice, c, "What is 3+3?")  # an edit of the first message
    edited_answer = await append(history, alice, c, "6", parent=edited.name, author=pb.AUTHOR_ASSISTANT)

    assert (regenerated.sibling_index, regenerated.sibling_count) == (1, 2)
    assert (edited.sibling_index, edited.sibling_count) == (1, 2)

    async def path() -> list[tuple[str, int, int]]:
        found = await all_messages(history, alice, c, view=pb.MESSAGE_VIEW_ACTIVE_PATH)
        return [(m.text, m.sibling_index, m.sibling_count) for m in found]

    assert await path() == [("What is 3+3?", 1, 2), ("6", 0, 1)]

    async def switch(to: pb.Message) -> pb.Conversation:
        reply = await history.UpdateConversation(
            pb.UpdateConversationRequest(
                conversation=pb.Conversation(name=c, active_message=to.name),
                update_mask=field_mask_pb2.FieldMask(paths=["active_message"]),
            ),
            metadata=alice.md,
        )
        return reply.conversation

    assert (await switch(answer)).active_message == answer.name
    assert await path() == [("What is 2+2?", 0, 2), ("5", 0, 2)]
    await switch(regenerated)
    assert await path() == [("What is 2+2?", 0, 2), ("4", 1, 2)]
    await switch(question)
    assert await path() == [("What is 2+2?", 0, 2)]
    everything = await all_messages(history, alice, c)
    assert [m.text for m in everything] == ["What is 2+2?", "5", "4", "What is 3+3?", "6"]
    del edited_answer


async def test_active_path_paging_keeps_the_path_of_its_first_page(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    conversation = await new_conversation(history, alice)
    parent, texts = "", []
    for i in range(6):
        parent = (await append(history, alice, conversation.name, f"m{i}", parent=parent)).name
        texts.append(f"m{i}")
    first = await history.ListMessages(
        pb.ListMessagesRequest(parent=conversation.name, page_size=4), metadata=alice.md
    )
    await append(history, alice, conversation.name, "later", parent=parent)

    rest = await history.ListMessages(
        pb.ListMessagesRequest(parent=conversation.name, page_size=4, page_token=first.next_page_token),
        metadata=alice.md,
    )

    assert [m.text for m in first.messages] + [m.text for m in rest.messages] == texts
    assert rest.next_page_token == ""


async def test_append_needs_the_router_s_service_identity(
    history: HistoryServiceAsyncStub, session_app: SessionApp, alice: Person
) -> None:
    conversation = await new_conversation(history, alice)
    request = pb.AppendMessageRequest(
        parent=conversation.name,
        message=pb.Message(
            name=f"{conversation.name}/messages/{message_id()}", author=pb.AUTHOR_USER, text="sneaky"
        ),
    )
    ledger = await session_app.issue_service_token("svc_ledger")

    own_token = await failure(history.AppendMessage(request, metadata=alice.md))
    as_service = (("authorization", f"Bearer {alice.token}"), ("x-parley-user-token", alice.token))
    posing = await failure(history.AppendMessage(request, metadata=as_service))
    other_service = await failure(
        history.AppendMessage(
            request, metadata=(("authorization", f"Bearer {ledger}"), ("x-parley-user-token", alice.token))
        )
    )

    for error in (own_token, other_service):
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason(error) == "SERVICE_ONLY"
    # A user's token where the service token belongs does not verify as one.
    assert posing.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await all_messages(history, alice, conversation.name) == []


async def test_a_full_conversation_takes_no_more_messages(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    conversation = await new_conversation(history, alice)
    for start in range(0, MESSAGE_LIMIT, 50):
        await asyncio.gather(
            *(append(history, alice, conversation.name, f"m{i}") for i in range(start, start + 50))
        )

    full = await failure(append(history, alice, conversation.name, "one too many"))

    assert full.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(full) == "CONVERSATION_FULL"
    assert len(await all_messages(history, alice, conversation.name)) == MESSAGE_LIMIT


async def test_a_message_id_written_by_another_request_is_already_exists(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    conversation = await new_conversation(history, alice)
    name = f"{conversation.name}/messages/{message_id()}"
    await append(history, alice, conversation.name, "first", name=name, request_id=str(uuid.uuid4()))

    again = await failure(
        append(history, alice, conversation.name, "second", name=name, request_id=str(uuid.uuid4()))
    )

    assert again.code() == grpc.StatusCode.ALREADY_EXISTS
    assert [m.text for m in await all_messages(history, alice, conversation.name)] == ["first"]

"""Conversations on real Cassandra: create, read, list and page, update with etags, delete."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from parley.history.v1 import history_pb2 as pb
from tests.integration.history.helpers import Person, all_messages, append, new_conversation
from tests.integration.session.helpers import failure, field_violations, reason

if TYPE_CHECKING:
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub
    from tests.integration.history.conftest import PeopleFactory

pytestmark = pytest.mark.integration


def _mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


async def _list_all(
    history: HistoryServiceAsyncStub, person: Person, page_size: int = 50, **filters: Any
) -> list[pb.Conversation]:
    found: list[pb.Conversation] = []
    token = ""
    while True:
        page = await history.ListConversations(
            pb.ListConversationsRequest(parent="users/me", page_size=page_size, page_token=token, **filters),
            metadata=person.md,
        )
        found.extend(page.conversations)
        token = page.next_page_token
        if not token:
            return found


async def test_create_returns_every_field_and_get_reads_it_back(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    created = await new_conversation(
        history,
        alice,
        title="Bread",
        model="parley-tiny",
        system_prompt="You are a baker.",
        folder="home/kitchen",
        tags=["food", "weekend"],
        pinned=True,
    )

    assert created.name.startswith(f"users/{alice.user_id}/conversations/")
    assert (created.title, created.model, created.system_prompt) == (
        "Bread",
        "parley-tiny",
        "You are a baker.",
    )
    assert (created.folder, list(created.tags), created.pinned, created.archived) == (
        "home/kitchen",
        ["food", "weekend"],
        True,
        False,
    )
    assert created.active_message == ""
    assert created.etag
    assert created.create_time == created.update_time
    got = await history.GetConversation(pb.GetConversationRequest(name=created.name), metadata=alice.md)
    assert got.conversation == created
    me_name = created.name.replace(f"users/{alice.user_id}", "users/me")
    assert (
        await history.GetConversation(pb.GetConversationRequest(name=me_name), metadata=alice.md)
    ).conversation == created


async def test_create_with_a_request_id_is_idempotent_also_concurrently(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    request_id = str(uuid.uuid4())

    async def create(title: str) -> pb.Conversation:
        reply = await history.CreateConversation(
            pb.CreateConversationRequest(
                parent="users/me", conversation=pb.Conversation(title=title), request_id=request_id
            ),
            metadata=alice.md,
        )
        return reply.conversation

    made = await asyncio.gather(*(create("first") for _ in range(10)))
    again = await create("a retry that changed its mind")

    assert len({c.name for c in made}) == 1
    assert again.name == made[0].name
    assert again.title == "first"
    assert [c.name for c in await _list_all(history, alice)] == [made[0].name]


async def test_update_changes_only_the_masked_fields_and_a_stale_etag_is_aborted(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    created = await new_conversation(history, alice, title="Draft", model="parley-tiny")

    updated = (
        await history.UpdateConversation(
            pb.UpdateConversationRequest(
                conversation=pb.Conversation(
                    name=created.name, title="Final", model="ignored", etag=created.etag, archived=True
                ),
                update_mask=_mask("title", "archived"),
            ),
            metadata=alice.md,
        )
    ).conversation

    assert (updated.title, updated.model, updated.archived) == ("Final", "parley-tiny", True)
    assert updated.etag != created.etag
    assert updated.update_time.ToDatetime() >= created.update_time.ToDatetime()
    stale = await failure(
        history.UpdateConversation(
            pb.UpdateConversationRequest(
                conversation=pb.Conversation(name=created.name, title="Lost update", etag=created.etag),
                update_mask=_mask("title"),
            ),
            metadata=alice.md,
        )
    )
    assert stale.code() == grpc.StatusCode.ABORTED
    assert reason(stale) == "ETAG_MISMATCH"
    stale_delete = await failure(
        history.DeleteConversation(
            pb.DeleteConversationRequest(name=created.name, etag=created.etag), metadata=alice.md
        )
    )
    assert stale_delete.code() == grpc.StatusCode.ABORTED
    now = await history.GetConversation(pb.GetConversationRequest(name=created.name), metadata=alice.md)
    assert now.conversation == updated


async def test_list_puts_pinned_first_then_the_most_recently_updated(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    old, middle, pinned, new = [await new_conversation(history, alice, title=t) for t in "ABCD"]
    await history.UpdateConversation(
        pb.UpdateConversationRequest(
            conversation=pb.Conversation(name=pinned.name, pinned=True), update_mask=_mask("pinned")
        ),
        metadata=alice.md,
    )
    await append(history, alice, old.name, "Bring the oldest back to the top")

    listed = [c.title for c in await _list_all(history, alice, page_size=2)]

    assert listed == ["C", "A", "D", "B"]
    del middle, new


async def test_filters_by_folder_with_subfolders_by_tag_and_hide_archived(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    await new_conversation(history, alice, title="work", folder="work", tags=["x"])
    await new_conversation(history, alice, title="client", folder="work/clients", tags=["y"])
    await new_conversation(history, alice, title="workshop", folder="workshop", tags=["x"])
    archived = await new_conversation(history, alice, title="old", folder="work", tags=["x"])
    await history.UpdateConversation(
        pb.UpdateConversationRequest(
            conversation=pb.Conversation(name=archived.name, archived=True), update_mask=_mask("archived")
        ),
        metadata=alice.md,
    )

    async def titles(**filters: Any) -> set[str]:
        return {c.title for c in await _list_all(history, alice, **filters)}

    assert await titles(folder="work") == {"work", "client"}
    assert await titles(folder="work", show_archived=True) == {"work", "client", "old"}
    assert await titles(tag="x") == {"work", "workshop"}
    assert await titles() == {"work", "client", "workshop"}


async def test_paging_1000_conversations_while_new_ones_are_created(
    history: HistoryServiceAsyncStub, people: PeopleFactory
) -> None:
    person = await people()
    existing: list[str] = []
    for start in range(0, 1000, 100):
        batch = await asyncio.gather(
            *(new_conversation(history, person, title=f"c{i}") for i in range(start, start + 100))
        )
        existing += [c.name for c in batch]
    creating = True

    async def keep_creating() -> int:
        made = 0
        while creating:
            await new_conversation(history, person, title="new")
            made += 1
        return made

    creator = asyncio.create_task(keep_creating())
    seen: list[str] = []
    token, pages = "", 0
    while True:
        page = await history.ListConversations(
            pb.ListConversationsRequest(parent="users/me", page_size=37, page_token=token), metadata=person.md
        )
        seen += [c.name for c in page.conversations]
        pages += 1
        token = page.next_page_token
        if not token:
            break
        await asyncio.sleep(0.01)  # let the creator interleave
    creating = False
    made_meanwhile = await creator

    assert made_meanwhile > 0
    assert len(seen) == len(set(seen)), "a conversation was listed twice"
    assert set(existing) <= set(seen), f"{len(set(existing) - set(seen))} existing conversations skipped"
    assert pages >= 1000 // 37
    clamped = await history.ListConversations(
        pb.ListConversationsRequest(parent="users/me", page_size=10_000), metadata=person.md
    )
    assert len(clamped.conversations) == 200
    assert clamped.next_page_token


async def test_an_altered_or_foreign_page_token_is_invalid_argument(
    history: HistoryServiceAsyncStub, alice: Person, bob: Person
) -> None:
    for title in "abc":
        await new_conversation(history, alice, title=title, folder="f")
    first = await history.ListConversations(
        pb.ListConversationsRequest(parent="users/me", page_size=1), metadata=alice.md
    )
    token = first.next_page_token
    assert token
    flipped = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")

    altered = await failure(
        history.ListConversations(
            pb.ListConversationsRequest(parent="users/me", page_size=1, page_token=flipped), metadata=alice.md
        )
    )
    other_filter = await failure(
        history.ListConversations(
            pb.ListConversationsRequest(parent="users/me", page_size=1, page_token=token, folder="f"),
            metadata=alice.md,
        )
    )
    other_user = await failure(
        history.ListConversations(
            pb.ListConversationsRequest(parent="users/me", page_size=1, page_token=token), metadata=bob.md
        )
    )
    for error in (altered, other_filter, other_user):
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(field_violations(error)) == {"page_token"}


async def test_the_first_user_message_titles_an_untitled_conversation(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    untitled = await new_conversation(history, alice)
    titled = await new_conversation(history, alice, title="Mine")

    await append(history, alice, untitled.name, "How long should sourdough   rise overnight?")
    await append(history, alice, titled.name, "Something else")

    got = await history.GetConversation(pb.GetConversationRequest(name=untitled.name), metadata=alice.md)
    assert got.conversation.title == "How long should sourdough rise overnight?"
    kept = await history.GetConversation(pb.GetConversationRequest(name=titled.name), metadata=alice.md)
    assert kept.conversation.title == "Mine"


async def test_delete_removes_the_conversation_its_messages_and_share_links(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    conversation = await new_conversation(history, alice, title="Doomed")
    first = await append(history, alice, conversation.name, "hello")
    link = (
        await history.CreateShareLink(pb.CreateShareLinkRequest(parent=conversation.name), metadata=alice.md)
    ).share_link
    assert len(await all_messages(history, alice, conversation.name)) == 1

    await history.DeleteConversation(pb.DeleteConversationRequest(name=conversation.name), metadata=alice.md)

    for call in (
        history.GetConversation(pb.GetConversationRequest(name=conversation.name), metadata=alice.md),
        history.ListMessages(pb.ListMessagesRequest(parent=conversation.name), metadata=alice.md),
        history.ListShareLinks(pb.ListShareLinksRequest(parent=conversation.name), metadata=alice.md),
        history.GetSharedConversation(pb.GetSharedConversationRequest(token=link.token)),
        history.DeleteConversation(pb.DeleteConversationRequest(name=conversation.name), metadata=alice.md),
    ):
        assert (await failure(call)).code() == grpc.StatusCode.NOT_FOUND
    assert conversation.name not in {c.name for c in await _list_all(history, alice, show_archived=True)}
    del first

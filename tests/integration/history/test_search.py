"""SearchMessages and the search indexer on the real Weaviate, Triton, Pulsar and Cassandra.

Messages are appended through svc_history (as the router does), reach Weaviate through the
outbox, Pulsar and the indexer, and are searched through the gRPC API.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC
from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2

from parley.history.v1 import history_pb2 as pb
from parley.session.v1 import session_pb2
from parley_core.errors import details_of
from parley_core.stubs import session_stub
from svc_history.app import HistoryApp
from svc_history.search.app import IndexerApp
from svc_history.search.documents import IndexedMessage, query_words
from svc_history.search.index import MessageIndex
from svc_session.app import SessionApp
from tests.integration.history.helpers import Person, append, new_conversation

if TYPE_CHECKING:
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub

pytestmark = pytest.mark.integration

FULL_TEXT, SEMANTIC, HYBRID = pb.SEARCH_MODE_FULL_TEXT, pb.SEARCH_MODE_SEMANTIC, pb.SEARCH_MODE_HYBRID
MODES = (FULL_TEXT, SEMANTIC, HYBRID)

CAR = "I spent the whole weekend fixing my car: new brake pads, and the engine finally runs smoothly."
CAKE = "A lemon cake needs three eggs, sugar, butter and the zest of two lemons."

Objects = dict[uuid.UUID, tuple[dict[str, object], list[float]]]


async def search(
    history: HistoryServiceAsyncStub, person: Person, query: str, mode: pb.SearchMode = HYBRID,
    page_size: int = 100, page_token: str = "",
) -> pb.SearchMessagesResponse:  # fmt: skip
    request = pb.SearchMessagesRequest(
        parent="users/me",
        query=query,
        mode=mode,
        page_size=page_size,
        page_token=page_token,
    )
    return await history.SearchMessages(request, metadata=person.md)


async def until(
    history: HistoryServiceAsyncStub,
    person: Person,
    query: str,
    mode: pb.SearchMode,
    done: Callable[[pb.SearchMessagesResponse], bool],
    timeout_s: float = 60.0,
) -> pb.SearchMessagesResponse:
    """Search until `done` holds for the answer (the indexer works asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while True:
        reply = await search(history, person, query, mode)
        if done(reply) or time.monotonic() > deadline:
            return reply
        await asyncio.sleep(0.3)


def names(reply: pb.SearchMessagesResponse) -> list[str]:
    return [hit.message.name for hit in reply.hits]


async def indexed(history: HistoryServiceAsyncStub, person: Person, *messages: pb.Message) -> None:
    """Wait until the indexer has written each of these messages (found by its own text)."""
    for message in messages:
        name = message.name

        def found(reply: pb.SearchMessagesResponse, name: str = name) -> bool:
            return name in names(reply)

        reply = await until(history, person, message.text, FULL_TEXT, found)
        assert found(reply), f"{message.text!r} was not indexed in time"


async def objects_of(index: MessageIndex, user_id: str) -> Objects:
    return {object_id: (properties, vector) async for object_id, properties, vector in index.objects(user_id)}


async def eventually_empty(index: MessageIndex, user_id: str, conversation_id: str | None = None) -> Objects:
    """The user's objects (of one conversation) once none are left, or after 60 s."""
    deadline = time.monotonic() + 60
    while True:
        found = {
            key: value
            for key, value in (await objects_of(index, user_id)).items()
            if conversation_id is None or value[0]["conversation_id"] == conversation_id
        }
        if not found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.3)


def conversation_id_of(conversation: pb.Conversation) -> str:
    return conversation.name.rsplit("/", 1)[-1]


async def failure(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


@pytest.fixture
async def index(history_app: HistoryApp) -> AsyncIterator[MessageIndex]:
    found = MessageIndex(history_app.settings.search)
    yield found
    await found.close()


# Finding -------------------------------------------------------------------------------


async def test_a_message_is_found_by_one_of_its_words_with_the_word_marked(
    history: HistoryServiceAsyncStub, indexer_app: IndexerApp, alice: Person
) -> None:
    conversation = await new_conversation(history, alice, title="Garage notes")
    car = await append(history, alice, conversation.name, CAR)
    cake = await append(history, alice, conversation.name, CAKE, parent=car.name, author=pb.AUTHOR_ASSISTANT)
    await indexed(history, alice, car, cake)

    reply = await search(history, alice, "PADS", FULL_TEXT)

    assert names(reply) == [car.name]
    [hit] = reply.hits
    assert hit.message == car
    assert hit.conversation_title == "Garage notes"
    assert hit.snippet == CAR
    assert [hit.snippet[m.start : m.end] for m in hit.snippet_matches] == ["pads"]
    assert hit.score > 0
    assert reply.next_page_token == ""


async def test_a_long_message_s_snippet_is_the_text_around_the_match(
    history: HistoryServiceAsyncStub, indexer_app: IndexerApp, alice: Person
) -> None:
    conversation = await new_conversation(history, alice)
    text = "Filler words about nothing in particular. " * 20 + "The zeppelin landed. " + "More filler. " * 30
    await append(history, alice, conversation.name, text)

    [hit] = (await until(history, alice, "zeppelin", FULL_TEXT, lambda r: bool(r.hits))).hits

    assert hit.message.text == text
    assert hit.snippet.startswith("…")
    assert hit.snippet.endswith("…")
    assert len(hit.snippet) <= 210
    assert [hit.snippet[m.start : m.end] for m in hit.snippet_matches] == ["zeppelin"]
    assert hit.snippet.replace("…", "") in text


async def test_a_paraphrase_with_no_word_in_common_finds_the_message(
    history: HistoryServiceAsyncStub, indexer_app: IndexerApp, alice: Person
) -> None:
    conversation = await new_conversation(history, alice)
    car = await append(history, alice, conversation.name, CAR)
    cake = await append(history, alice, conversation.name, CAKE, parent=car.name)
    await indexed(history, alice, car, cake)
    query = "automobile repair"
    assert not query_words(query) & query_words(CAR), "the query shares no word with the message"

    reply = await search(history, alice, query, SEMANTIC)

    assert names(reply)[:1] == [car.name]
    assert cake.name not in names(reply), "an unrelated message is beyond the distance cut-off"
    assert reply.hits[0].snippet_matches == [], "no word of the query is in it to mark"
    assert (await search(history, alice, query, FULL_TEXT)).hits == []


async def test_hybrid_ranks_the_message_that_matches_words_and_meaning_first(
    history: HistoryServiceAsyncStub, indexer_app: IndexerApp, alice: Person
) -> None:
    conversation = await new_conversation(history, alice)
    words = await append(
        history, alice, conversation.name, "Repair the kitchen sink before the guests arrive."
    )
    meaning = await append(
        history, alice, conversation.name, "My automobile broke down on the highway; a mechanic towed it.",
        parent=words.name,
    )  # fmt: skip
    both = await append(
        history, alice, conversation.name, "The car repair shop replaced the timing belt of my car.",
        parent=meaning.name,
    )  # fmt: skip
    await indexed(history, alice, words, meaning, both)

    reply = await search(history, alice, "car repair", HYBRID)

    assert names(reply)[0] == both.name
    assert set(names(reply)) >= {both.name, words.name, meaning.name}, [h.message.text for h in reply.hits]
    assert [reply.hits[0].snippet[m.start : m.end] for m in reply.hits[0].snippet_matches] == [
        "car", "repair", "car",
    ]  # fmt: skip
    scores = [hit.score for hit in reply.hits]
    assert scores == sorted(scores, reverse=True)
    unspecified = await search(history, alice, "car repair", pb.SEARCH_MODE_UNSPECIFIED)
    assert names(unspecified) == names(reply), "no mode is HYBRID"


async def test_pages_go_through_every_hit_once(
    history: HistoryServiceAsyncStub, indexer_app: IndexerApp, alice: Person
) -> None:
    conversation = await new_conversation(history, alice)
    parent, written = "", []
    for n in range(7):
        message = await append(
            history, alice, conversation.name, f"quokka sighting number {n}", parent=parent
        )
        written.append(message.name)
        parent = message.name
    await until(history, alice, "quokka", FULL_TEXT, lambda r: len(r.hits) == 7)

    seen, token, pages = [], "", 0
    while True:
        reply = await search(history, alice, "quokka", FULL_TEXT, page_size=3, page_token=token)
        seen += names(reply)
        pages += 1
        token = reply.next_page_token
        if not token:
            break

    assert sorted(seen) == sorted(written)
    assert pages == 3
    # A token is bound to its query and mode.
    first = await search(history, alice, "quokka", FULL_TEXT, page_size=3)
    for query, mode in (("wombat", FULL_TEXT), ("quokka", HYBRID)):
        error = await failure(
            search(history, alice, query, mode, page_size=3, page_token=first.next_page_token)
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


# Isolation and erasure -------------------------------------------------------------------


async def test_another_user_finds_nothing_of_mine_whatever_the_query(
    history: HistoryServiceAsyncStub, indexer_app: IndexerApp, alice: Person, bob: Person
) -> None:
    conversation = await new_conversation(history, alice)
    car = await append(history, alice, conversation.name, CAR)
    await indexed(history, alice, car)
    await append(history, bob, (await new_conversation(history, bob)).name, "something of bob's own")

    for query in (CAR, "car", "automobile repair", "weekend", car.name, alice.user_id, "*"):
        for mode in MODES:
            reply = await search(history, bob, query, mode)
            assert all(hit.message.name.startswith(bob.name) for hit in reply.hits), (query, mode)
            assert car.name not in names(reply)
    aimed = pb.SearchMessagesRequest(parent=alice.name, query="car", mode=FULL_TEXT)
    error = await failure(history.SearchMessages(aimed, metadata=bob.md))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_a_deleted_conversation_is_gone_from_search_and_from_weaviate(
    history: HistoryServiceAsyncStub, indexer_app: IndexerApp, index: MessageIndex, alice: Person
) -> None:
    doomed = await new_conversation(history, alice)
    kept = await new_conversation(history, alice)
    gone = await append(history, alice, doomed.name, "the ocelot ate my homework")
    stays = await append(history, alice, kept.name, "the ocelot is asleep")
    await indexed(history, alice, gone, stays)

    await history.DeleteConversation(pb.DeleteConversationRequest(name=doomed.name), metadata=alice.md)

    for mode in MODES:
        assert names(await search(history, alice, "ocelot homework", mode)) == [stays.name]
    assert await eventually_empty(index, alice.user_id, conversation_id_of(doomed)) == {}
    left = await objects_of(index, alice.user_id)
    assert {p["conversation_id"] for p, _ in left.values()} == {conversation_id_of(kept)}


async def test_an_index_behind_a_delete_never_returns_the_deleted_conversation(
    history: HistoryServiceAsyncStub, indexer_app: IndexerApp, index: MessageIndex, alice: Person
) -> None:
    conversation = await new_conversation(history, alice)
    message = await append(history, alice, conversation.name, "the pangolin rolled into a ball")
    await indexed(history, alice, message)
    stale = IndexedMessage(
        alice.user_id, conversation_id_of(conversation), message.name.rsplit("/", 1)[-1], "user",
        message.text, message.create_time.ToDatetime(tzinfo=UTC),
    )  # fmt: skip
    await history.DeleteConversation(pb.DeleteConversationRequest(name=conversation.name), metadata=alice.md)
    await eventually_empty(index, alice.user_id, conversation_id_of(conversation))

    # What an index that has not caught up with the delete still holds.
    await index.upsert([stale], await indexer_app.embedder.embed([stale.text]))
    assert len(await objects_of(index, alice.user_id)) == 1

    for mode in MODES:
        assert (await search(history, alice, "pangolin", mode)).hits == [], mode
    await index.delete_user(alice.user_id)


async def test_delete_user_data_removes_the_user_s_tenant(
    history: HistoryServiceAsyncStub, indexer_app: IndexerApp, index: MessageIndex, alice: Person
) -> None:
    first = await new_conversation(history, alice)
    second = await new_conversation(history, alice)
    one = await append(history, alice, first.name, "narwhal tusks are teeth")
    two = await append(history, alice, second.name, "a narwhal in the arctic")
    await indexed(history, alice, one, two)
    assert alice.user_id in await index.tenants()

    await history.DeleteUserData(
        pb.DeleteUserDataRequest(name=alice.name, confirm=alice.name), metadata=alice.md
    )

    deadline = time.monotonic() + 60
    while alice.user_id in await index.tenants() and time.monotonic() < deadline:  # noqa: ASYNC110 - polls Weaviate
        await asyncio.sleep(0.3)
    assert alice.user_id not in await index.tenants()
    assert await objects_of(index, alice.user_id) == {}


# Bad input ----------------------------------------------------------------------------------


async def test_bad_searches_are_invalid_argument_naming_the_field(
    history: HistoryServiceAsyncStub, indexer_app: IndexerApp, alice: Person, bob: Person
) -> None:
    conversation = await new_conversation(history, alice)
    parent = ""
    for n in range(3):
        parent = (await append(history, alice, conversation.name, f"tapir fact {n}", parent=parent)).name
    await until(history, alice, "tapir", FULL_TEXT, lambda r: len(r.hits) == 3)
    alices_page = await search(history, alice, "tapir", FULL_TEXT, page_size=1)
    assert alices_page.next_page_token

    cases: list[tuple[str, dict[str, object]]] = [
        ("query", {"query": ""}),
        ("query", {"query": "   \n\t"}),
        ("query", {"query": "x" * 501}),
        ("mode", {"mode": 7}),
        ("mode", {"mode": -1}),
        ("page_size", {"page_size": -1}),
        ("page_token", {"page_token": "garbage"}),
        ("page_token", {"page_token": alices_page.next_page_token + "x"}),
    ]
    for field, fields in cases:
        values: dict[str, object] = {"parent": "users/me", "query": "tapir", "mode": FULL_TEXT, **fields}
        request = pb.SearchMessagesRequest(**values)  # type: ignore[arg-type]
        error = await failure(history.SearchMessages(request, metadata=alice.md))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
        [bad] = [d for d in details_of(error) if isinstance(d, error_details_pb2.BadRequest)]
        assert [v.field for v in bad.field_violations] == [field], fields

    # Another user's token, even for the same query and mode, is not bob's.
    stolen = pb.SearchMessagesRequest(
        parent="users/me", query="tapir", mode=FULL_TEXT, page_size=1, page_token=alices_page.next_page_token
    )
    error = await failure(history.SearchMessages(stolen, metadata=bob.md))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    # 500 characters is still a query; the largest page is 100.
    assert (await search(history, alice, "tapir " + "y" * 494, FULL_TEXT)).hits is not None
    assert len((await search(history, alice, "tapir", FULL_TEXT, page_size=10_000)).hits) == 3


async def test_searching_needs_a_token_with_history_read(
    history: HistoryServiceAsyncStub, indexer_app: IndexerApp
) -> None:
    request = pb.SearchMessagesRequest(parent="users/me", query="anything")
    for metadata in ((), (("authorization", "Bearer not-a-token"),)):
        error = await failure(history.SearchMessages(request, metadata=metadata))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_key_that_may_only_chat_cannot_search(
    history: HistoryServiceAsyncStub, indexer_app: IndexerApp, session_app: SessionApp, alice: Person
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{session_app.port}") as channel:
        stub = session_stub(channel)
        created = await stub.CreateApiKey(
            session_pb2.CreateApiKeyRequest(
                parent="users/me",
                api_key=session_pb2.ApiKey(display_name="chat only", scopes=["chat"]),
                request_id=str(uuid.uuid4()),
            ),
            metadata=alice.md,
        )
        login = await stub.Login(session_pb2.LoginRequest(api_key=created.key))
    key_md = (("authorization", f"Bearer {login.credentials.access_token}"),)

    request = pb.SearchMessagesRequest(parent="users/me", query="anything", mode=FULL_TEXT)
    error = await failure(history.SearchMessages(request, metadata=key_md))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_hit_is_the_stored_message_with_its_place_among_its_siblings(
    history: HistoryServiceAsyncStub, indexer_app: IndexerApp, alice: Person
) -> None:
    conversation = await new_conversation(history, alice)
    question = await append(history, alice, conversation.name, "how far is the moon")
    first = await append(history, alice, conversation.name, "about 384,400 km, give or take",
                         parent=question.name, author=pb.AUTHOR_ASSISTANT)  # fmt: skip
    second = await append(history, alice, conversation.name, "the moon is roughly 384,400 km away",
                          parent=question.name, author=pb.AUTHOR_ASSISTANT)  # fmt: skip
    await indexed(history, alice, question, first, second)

    reply = await search(history, alice, "384,400", FULL_TEXT)

    by_name = {hit.message.name: hit.message for hit in reply.hits}
    listed = await history.ListMessages(
        pb.ListMessagesRequest(parent=conversation.name, view=pb.MESSAGE_VIEW_ALL), metadata=alice.md
    )
    # Exactly what ListMessages says of them now (the second answer made the first a sibling).
    assert by_name == {m.name: m for m in listed.messages if m.name in (first.name, second.name)}
    assert [(m.sibling_index, m.sibling_count) for m in (by_name[first.name], by_name[second.name])] == [
        (0, 2), (1, 2),
    ]  # fmt: skip
    assert by_name[second.name].parent_message == question.name

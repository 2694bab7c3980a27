"""The search indexer and the reindex command against the real Weaviate, Triton, Pulsar and
Cassandra: redelivered and undecodable events, Weaviate stopped mid-stream, lag metrics,
and a rebuild from Cassandra that equals the incremental index."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pulsar
import pytest
from google.rpc import error_details_pb2

from parley.events.v1 import events_pb2
from parley.history.v1 import history_pb2 as pb
from parley_core.errors import details_of
from parley_core.events import MESSAGE_CREATED, topic_url
from parley_core.stubs import history_stub
from parley_stack.testing import LocalStack
from svc_history.app import HistoryApp
from svc_history.model import now
from svc_history.search.app import IndexerApp
from svc_history.search.documents import IndexedMessage
from svc_history.search.index import MessageIndex
from svc_history.search.indexer import DEAD_LETTER
from svc_history.search.reindex import Reindex
from svc_session.app import SessionApp
from tests.integration.history.conftest import PeopleFactory, history_settings, search_settings
from tests.integration.history.helpers import EventTap, Person, append, new_conversation
from tests.integration.history.test_search import (
    FULL_TEXT,
    Objects,
    conversation_id_of,
    indexed,
    names,
    objects_of,
    search,
    until,
)

if TYPE_CHECKING:
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub

pytestmark = pytest.mark.integration


@pytest.fixture
async def index(history_app: HistoryApp) -> AsyncIterator[MessageIndex]:
    found = MessageIndex(history_app.settings.search)
    yield found
    await found.close()


class InterruptedRunError(Exception):
    pass


def _sample(indexer: IndexerApp, name: str, **labels: str) -> float:
    return indexer.registry.get_sample_value(name, labels) or 0.0


def _same_objects(built: Objects, rebuilt: Objects) -> None:
    """Same ids, same properties, and vectors equal up to float rounding (Triton's batches
    differ between the two runs)."""
    assert built.keys() == rebuilt.keys()
    for object_id, (properties, vector) in built.items():
        again, again_vector = rebuilt[object_id]
        assert again == properties
        assert len(again_vector) == len(vector) == 384
        assert max(abs(a - b) for a, b in zip(vector, again_vector, strict=True)) < 1e-4
        assert math.isclose(sum(a * a for a in again_vector), 1.0, rel_tol=1e-4)


# Delivery ---------------------------------------------------------------------------------


async def test_events_delivered_twice_leave_one_object_each(
    history: HistoryServiceAsyncStub,
    indexer_app: IndexerApp,
    index: MessageIndex,
    pulsar_client: pulsar.Client,
    alice: Person,
) -> None:
    conversation = await new_conversation(history, alice)
    first = await append(history, alice, conversation.name, "the axolotl regrows its limbs")
    second = await append(history, alice, conversation.name, "an axolotl never grows up", parent=first.name)
    await indexed(history, alice, first, second)
    before = await objects_of(index, alice.user_id)

    producer = pulsar_client.create_producer(topic_url(MESSAGE_CREATED))
    try:
        for message in (first, second, first, second):
            event = events_pb2.MessageCreated(
                event_id=str(uuid.uuid4()), event_time=message.create_time, user=alice.name,
                message=message.name, author="user", text=message.text,
            )  # fmt: skip
            producer.send(event.SerializeToString(), partition_key=alice.user_id)
    finally:
        producer.close()
    # Events are handled in order: once a message appended after them is found, they are done.
    marker = await append(history, alice, conversation.name, "the axolotl marker", parent=second.name)
    await indexed(history, alice, marker)

    after = await objects_of(index, alice.user_id)
    assert len(after) == 3
    _same_objects(before, {k: v for k, v in after.items() if k in before})
    reply = await search(history, alice, "axolotl", FULL_TEXT)
    assert sorted(names(reply)) == sorted([first.name, second.name, marker.name])


async def test_an_undecodable_event_goes_to_the_dead_letter_topic_and_the_rest_is_indexed(
    history: HistoryServiceAsyncStub, indexer_app: IndexerApp, pulsar_client: pulsar.Client, alice: Person
) -> None:
    tap = EventTap(pulsar_client, DEAD_LETTER)
    producer = pulsar_client.create_producer(topic_url(MESSAGE_CREATED))
    try:
        producer.send(b"\xff\x00 not a protobuf", partition_key=alice.user_id)
        foreign = events_pb2.MessageCreated(
            event_id=str(uuid.uuid4()), user=alice.name, text="forged",
            message=f"users/someone-else/conversations/{uuid.uuid4()}/messages/{uuid.uuid1()}",
        )  # fmt: skip
        producer.send(foreign.SerializeToString(), partition_key=alice.user_id)
        conversation = await new_conversation(history, alice)
        after = await append(history, alice, conversation.name, "the capybara after the garbage")

        subscription = indexer_app.settings.search.subscription  # not another indexer's (a dev stack's)
        dead = await tap.take(
            lambda m: (
                m.partition_key() == alice.user_id and m.properties().get("subscription") == subscription
            ),
            2,
            # Dead-lettering is at least once: an event redelivered before its acknowledgement
            # reached the broker (a slow CI machine) is dead-lettered again.
            distinct=lambda m: m.data(),
        )
        await indexed(history, alice, after)
    finally:
        producer.close()
        tap.close()

    assert [m.data()[:4] for m in dead][:1] == [b"\xff\x00 n"]
    assert all(m.properties()["topic"] == MESSAGE_CREATED for m in dead)
    assert "not the event's user's" in dead[1].properties()["reason"]
    assert (
        _sample(
            indexer_app, "parley_search_indexer_events_total", topic=MESSAGE_CREATED, outcome="dead_letter"
        )
        >= 2
    )


# Outage -----------------------------------------------------------------------------------


async def test_weaviate_stopped_and_restarted_mid_stream_loses_no_event(
    history: HistoryServiceAsyncStub, indexer_app: IndexerApp, history_servers: LocalStack, alice: Person
) -> None:
    conversation = await new_conversation(history, alice)
    appended: list[pb.Message] = []

    async def chat(count: int) -> None:
        parent = appended[-1].name if appended else ""
        for n in range(count):
            message = await append(
                history, alice, conversation.name, f"marmot report {len(appended)} {n}", parent=parent
            )
            appended.append(message)
            parent = message.name
            await asyncio.sleep(0.05)

    await chat(5)
    await asyncio.to_thread(history_servers.stop, ["weaviate"])
    try:
        await chat(10)  # chatting is unaffected while Weaviate is down
        error = None
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await search(history, alice, "marmot", FULL_TEXT)
        error = raised.value
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        [retry] = [d for d in details_of(error) if isinstance(d, error_details_pb2.RetryInfo)]
        assert retry.retry_delay.seconds >= 1
        listed = await history.ListMessages(
            pb.ListMessagesRequest(parent=conversation.name), metadata=alice.md
        )
        assert len(listed.messages) == 15
        # The indexer holds what it could not write, and says how far behind it is.
        deadline = time.monotonic() + 30
        while _sample(indexer_app, "parley_search_index_lag_seconds") <= 0 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        assert _sample(indexer_app, "parley_search_index_lag_seconds") > 0
        assert _sample(indexer_app, "parley_search_index_lag_events") >= 1
    finally:
        await asyncio.to_thread(history_servers.ensure, "weaviate")
    await chat(5)

    reply = await until(history, alice, "marmot", FULL_TEXT, lambda r: len(r.hits) == 20, timeout_s=120)
    assert sorted(names(reply)) == sorted(m.name for m in appended)
    deadline = time.monotonic() + 30
    while _sample(indexer_app, "parley_search_index_lag_seconds") > 0 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    assert _sample(indexer_app, "parley_search_index_lag_seconds") == 0


# Reindex ----------------------------------------------------------------------------------


async def test_a_reindex_from_scratch_gives_the_objects_the_indexer_built(
    history: HistoryServiceAsyncStub,
    history_app: HistoryApp,
    indexer_app: IndexerApp,
    index: MessageIndex,
    alice: Person,
) -> None:
    first = await new_conversation(history, alice, title="Pets")
    second = await new_conversation(history, alice, title="Plants")
    root = await append(history, alice, first.name, "my hedgehog sleeps all day")
    answer = await append(history, alice, first.name, "hedgehogs are nocturnal", parent=root.name,
                          author=pb.AUTHOR_ASSISTANT)  # fmt: skip
    branch = await append(history, alice, first.name, "my hedgehog snores", parent=root.name)
    fern = await append(history, alice, second.name, "the fern on the hedgehog shelf needs water")
    await indexed(history, alice, root, answer, branch, fern)
    built = await objects_of(index, alice.user_id)
    assert len(built) == 4

    await index.delete_user(alice.user_id)
    assert await objects_of(index, alice.user_id) == {}
    rebuilt = await Reindex(history_app.stores, index, indexer_app.embedder).user(alice.user_id)

    assert rebuilt.messages == 4
    _same_objects(built, await objects_of(index, alice.user_id))
    assert {p["author"] for p, _ in built.values()} == {"user", "assistant"}


async def test_a_reindex_over_a_stale_index_removes_what_cassandra_does_not_have(
    history: HistoryServiceAsyncStub,
    history_app: HistoryApp,
    indexer_app: IndexerApp,
    index: MessageIndex,
    alice: Person,
) -> None:
    conversation = await new_conversation(history, alice)
    kept = await append(history, alice, conversation.name, "the walrus basks")
    await indexed(history, alice, kept)
    built = await objects_of(index, alice.user_id)
    ghost = IndexedMessage(alice.user_id, conversation_id_of(conversation), str(uuid.uuid1()), "user",
                           "a walrus that never was", next(iter(built.values()))[0]["create_time"])  # type: ignore[arg-type]  # fmt: skip
    await index.upsert([ghost], await indexer_app.embedder.embed([ghost.text]))

    rebuilt = await Reindex(history_app.stores, index, indexer_app.embedder).user(alice.user_id)

    assert (rebuilt.messages, rebuilt.removed) == (1, 1)
    _same_objects(built, await objects_of(index, alice.user_id))


async def test_a_reindex_of_everyone_resumes_where_it_stopped(
    history_servers: LocalStack, session_app: SessionApp, indexer_app: IndexerApp, people: PeopleFactory
) -> None:
    """In a keyspace and collection of its own: every user of the keyspace is rebuilt, an
    interrupted run resumes after the last user it finished, and the tenant of a user
    without conversations goes."""
    settings = history_settings(history_servers, search=search_settings(
        history_servers, collection=f"MessageReindex{uuid.uuid4().hex[:8]}"))  # fmt: skip
    app = await HistoryApp.start(settings, key_source=session_app.keys)
    index = MessageIndex(settings.search)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = history_stub(channel)
            users = [await people() for _ in range(3)]
            for n, person in enumerate(users):
                conversation = await new_conversation(stub, person)
                parent = ""
                for m in range(n + 1):
                    parent = (
                        await append(stub, person, conversation.name, f"okapi note {m}", parent=parent)
                    ).name
        gone = str(uuid.uuid4())  # a tenant whose user has no conversations any more
        leftover = IndexedMessage(gone, str(uuid.uuid4()), str(uuid.uuid1()), "user", "okapi leftover", now())
        await index.upsert([leftover], await indexer_app.embedder.embed([leftover.text]))
        reindex = Reindex(app.stores, index, indexer_app.embedder)
        rebuilt: list[str] = []

        def interrupted(user_id: str, _: int) -> None:
            if len(set(rebuilt)) == 1 and user_id not in rebuilt:
                raise InterruptedRunError  # stopped during the second user
            rebuilt.append(user_id)

        with pytest.raises(InterruptedRunError):
            await reindex.everyone("test-run", interrupted)
        [first] = set(rebuilt)
        resumed: list[str] = []
        state = await reindex.everyone("test-run", lambda user_id, _: resumed.append(user_id))

        ours = {person.user_id for person in users}
        assert first not in resumed
        assert set(resumed) | {first} >= ours
        assert state.finish_time is not None
        for n, person in enumerate(users):
            assert len(await objects_of(index, person.user_id)) == n + 1
        assert gone not in await index.tenants()
    finally:
        await index.drop()
        await index.close()
        await asyncio.to_thread(app.cql.execute, f"DROP KEYSPACE IF EXISTS {settings.keyspace}")
        await app.stop()

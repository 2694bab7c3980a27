"""A user's data as a whole: the export holds exactly what they own; the erasure leaves no
row of theirs in any table of history's keyspace, announces UserDeleted, and resumes after
a crash."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import grpc
import pulsar
import pytest

from parley.events.v1 import events_pb2
from parley.history.v1 import history_pb2 as pb
from parley_core.cassandra import execute
from parley_core.events import USER_DELETED
from svc_history.app import HistoryApp
from tests.integration.history.helpers import EventTap, Person, all_messages, append, keyed, new_conversation
from tests.integration.session.helpers import failure, field_violations

if TYPE_CHECKING:
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub

pytestmark = pytest.mark.integration


async def _populate(history: HistoryServiceAsyncStub, person: Person) -> dict[str, list[str]]:
    """Two conversations with branches and share links; returns every name made."""
    names: dict[str, list[str]] = {"conversations": [], "messages": [], "share_links": []}
    for title in ("One", "Two"):
        conversation = await new_conversation(history, person, title=title, tags=["t"], folder="f")
        question = await append(history, person, conversation.name, f"{title}?")
        answers = [
            await append(history, person, conversation.name, f"{title} {i}", parent=question.name,
                         author=pb.AUTHOR_ASSISTANT)
            for i in range(2)
        ]  # fmt: skip
        link = await history.CreateShareLink(
            pb.CreateShareLinkRequest(parent=conversation.name, password="a long password", request_id=""),
            metadata=person.md,
        )
        names["conversations"].append(conversation.name)
        names["messages"] += [question.name, *(a.name for a in answers)]
        names["share_links"].append(link.share_link.name)
    return names


async def _export(history: HistoryServiceAsyncStub, person: Person) -> list[pb.ExportUserDataResponse]:
    stream = history.ExportUserData(pb.ExportUserDataRequest(name="users/me"), metadata=person.md)
    return [record async for record in stream]


async def test_the_export_holds_exactly_what_the_user_owns(
    history: HistoryServiceAsyncStub, alice: Person, bob: Person
) -> None:
    names = await _populate(history, alice)
    await _populate(history, bob)

    records = await _export(history, alice)

    header = records[0].header
    assert records[0].WhichOneof("record") == "header"
    assert (header.user, header.format_version) == (alice.name, 1)
    assert header.export_time.seconds > 0
    expected: list[pb.ExportUserDataResponse] = []
    for conversation in names["conversations"]:
        got = await history.GetConversation(pb.GetConversationRequest(name=conversation), metadata=alice.md)
        expected.append(pb.ExportUserDataResponse(conversation=got.conversation))
        for message in await all_messages(history, alice, conversation):
            expected.append(pb.ExportUserDataResponse(message=message))
        links = await history.ListShareLinks(pb.ListShareLinksRequest(parent=conversation), metadata=alice.md)
        for link in reversed(links.share_links):
            expected.append(pb.ExportUserDataResponse(share_link=link))
    assert records[1:] == expected
    assert bob.user_id not in str(records)


async def _rows_of(app: HistoryApp, needles: set[str]) -> dict[str, int]:
    """How many rows of each table of the keyspace mention any of needles (in any column)."""
    tables = await execute(
        app.cql,
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s",
        (app.settings.keyspace,),
    )
    found: dict[str, int] = {}

    def every_row(table: str) -> list[Any]:
        return list(app.cql.execute(f"SELECT * FROM {app.settings.keyspace}.{table}"))

    for table in (row.table_name for row in tables):
        rows = await asyncio.to_thread(every_row, table)
        hits = sum(1 for row in rows if any(needle in _text(row) for needle in needles))
        if hits:
            found[table] = hits
    return found


async def _rows_left(app: HistoryApp, needles: set[str], timeout_s: float = 10) -> dict[str, int]:
    """_rows_of, once it is empty or the timeout has passed (the outbox empties asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = await _rows_of(app, needles)
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.2)


def _text(row: Any) -> str:
    """Every value of a row as text: ids show in the reprs of UUIDs, strings, collections and
    of blobs (request payloads, event payloads) alike."""
    return str(tuple(row))


def _needles(person: Person, names: dict[str, list[str]]) -> set[str]:
    """The user's id and the ids of everything they made."""
    ids = {person.user_id}
    for kind in names.values():
        ids.update(name.rsplit("/", 1)[-1] for name in kind)
    ids.update(name.split("/")[3] for name in names["conversations"])
    return ids


async def test_delete_user_data_leaves_no_row_and_announces_user_deleted(
    history: HistoryServiceAsyncStub,
    history_app: HistoryApp,
    alice: Person,
    bob: Person,
    pulsar_client: pulsar.Client,
) -> None:
    names = await _populate(history, alice)
    bob_names = await _populate(history, bob)
    needles = _needles(alice, names)
    assert await _rows_of(history_app, needles)  # the check can see the user's rows
    tap = EventTap(pulsar_client, USER_DELETED)
    try:
        receipt = await history.DeleteUserData(
            pb.DeleteUserDataRequest(name="users/me", confirm="users/me"), metadata=alice.md
        )
        [event] = await tap.take(keyed(alice.user_id), 1)
    finally:
        tap.close()

    assert (receipt.deleted_conversations, receipt.deleted_messages, receipt.deleted_share_links) == (2, 6, 2)
    assert receipt.delete_time.seconds > 0
    payload = events_pb2.UserDeleted.FromString(event.data())
    assert (payload.event_id, payload.user) == (receipt.event_id, alice.name)
    assert event.properties()["event_id"] == receipt.event_id
    # The relay deletes the event's own outbox row once Pulsar has acknowledged it.
    assert await _rows_left(history_app, needles) == {}
    # Bob keeps everything.
    assert len(await _export(history, bob)) == 1 + 2 + 6 + 2
    assert await _rows_of(history_app, _needles(bob, bob_names))
    # Again: nothing left to delete, the same event.
    again = await history.DeleteUserData(
        pb.DeleteUserDataRequest(name=alice.name, confirm=alice.name), metadata=alice.md
    )
    assert (again.deleted_conversations, again.deleted_messages, again.event_id) == (0, 0, receipt.event_id)


async def test_delete_user_data_resumes_after_a_crash_half_way(
    history: HistoryServiceAsyncStub, history_app: HistoryApp, alice: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = await _populate(history, alice)
    conversations = history_app.domain.conversations
    real_remove = conversations.remove
    calls = 0

    async def crash_on_the_second(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("the process died here")
        return await real_remove(*args, **kwargs)

    monkeypatch.setattr(conversations, "remove", crash_on_the_second)
    crashed = await failure(
        history.DeleteUserData(
            pb.DeleteUserDataRequest(name="users/me", confirm="users/me"), metadata=alice.md
        )
    )
    assert crashed.code() == grpc.StatusCode.UNAVAILABLE
    left = await _export(history, alice)
    assert [r.WhichOneof("record") for r in left].count("conversation") == 1
    monkeypatch.setattr(conversations, "remove", real_remove)

    receipt = await history.DeleteUserData(
        pb.DeleteUserDataRequest(name="users/me", confirm="users/me"), metadata=alice.md
    )

    assert (receipt.deleted_conversations, receipt.deleted_messages, receipt.deleted_share_links) == (2, 6, 2)
    assert len(await _export(history, alice)) == 1
    assert await _rows_left(history_app, _needles(alice, names)) == {}


async def test_delete_user_data_needs_the_name_repeated(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    conversation = await new_conversation(history, alice)

    error = await failure(
        history.DeleteUserData(pb.DeleteUserDataRequest(name="users/me", confirm="yes"), metadata=alice.md)
    )

    assert field_violations(error) == {"confirm": "must repeat the user's name"}
    got = await history.GetConversation(pb.GetConversationRequest(name=conversation.name), metadata=alice.md)
    assert got.conversation.name == conversation.name

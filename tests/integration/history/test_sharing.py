"""Share links on real Cassandra and Redis: snapshots, expiry, revocation, passwords, views."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from parley.history.v1 import history_pb2 as pb
from tests.integration.history.helpers import Person, append, new_conversation
from tests.integration.session.helpers import failure, field_violations, reason, retry_delay_s

if TYPE_CHECKING:
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub

pytestmark = pytest.mark.integration


async def _chat(
    history: HistoryServiceAsyncStub, person: Person, title: str = "Shared"
) -> tuple[str, list[pb.Message]]:
    conversation = await new_conversation(history, person, title=title)
    question = await append(history, person, conversation.name, "Is the earth round?")
    answer = await append(
        history, person, conversation.name, "Very nearly.", parent=question.name, author=pb.AUTHOR_ASSISTANT
    )
    return conversation.name, [question, answer]


async def _share(
    history: HistoryServiceAsyncStub, person: Person, conversation: str, **fields: Any
) -> pb.ShareLink:
    password = str(fields.pop("password", ""))
    reply = await history.CreateShareLink(
        pb.CreateShareLinkRequest(parent=conversation, share_link=pb.ShareLink(**fields), password=password),
        metadata=person.md,
    )
    return reply.share_link


def _at(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def test_a_share_is_a_snapshot_that_reveals_only_the_messages(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    conversation, (question, answer) = await _chat(history, alice, title="Geography")
    link = await _share(history, alice, conversation)
    await append(history, alice, conversation, "A later secret", parent=answer.name)

    shared = await history.GetSharedConversation(pb.GetSharedConversationRequest(token=link.token))

    assert len(link.token) >= 43  # 256 bits, base64url
    assert link.last_message == answer.name
    assert shared.title == "Geography"
    assert [(m.author, m.text, m.model) for m in shared.messages] == [
        (pb.AUTHOR_USER, "Is the earth round?", ""),
        (pb.AUTHOR_ASSISTANT, "Very nearly.", "parley-tiny"),
    ]
    assert shared.share_time == link.create_time
    wire = shared.SerializeToString()
    assert alice.user_id.encode() not in wire
    assert conversation.split("/")[-1].encode() not in wire
    del question


async def test_a_share_of_an_earlier_message_stops_there(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    conversation, (question, _) = await _chat(history, alice)

    link = await _share(history, alice, conversation, last_message=question.name)

    shared = await history.GetSharedConversation(pb.GetSharedConversationRequest(token=link.token))
    assert [m.text for m in shared.messages] == ["Is the earth round?"]


async def test_expired_revoked_and_unknown_links_look_the_same(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    conversation, _ = await _chat(history, alice)
    expiring = await _share(
        history, alice, conversation, expire_time=_at(datetime.now(UTC) + timedelta(seconds=1))
    )
    revoked = await _share(history, alice, conversation)
    assert (
        await history.GetSharedConversation(pb.GetSharedConversationRequest(token=expiring.token))
    ).messages

    await history.DeleteShareLink(pb.DeleteShareLinkRequest(name=revoked.name), metadata=alice.md)
    await asyncio.sleep(1.2)

    errors = [
        await failure(history.GetSharedConversation(pb.GetSharedConversationRequest(token=token)))
        for token in (expiring.token, revoked.token, "x" * 43, "")
    ]
    assert {e.code() for e in errors} == {grpc.StatusCode.NOT_FOUND}
    assert {e.details() for e in errors} == {errors[0].details()}
    assert {reason(e) for e in errors} == {"SHARE_LINK_NOT_FOUND"}
    listed = await history.ListShareLinks(pb.ListShareLinksRequest(parent=conversation), metadata=alice.md)
    assert [link.name for link in listed.share_links] == [expiring.name]
    assert listed.share_links[0].token == ""  # shown once, when it was made


async def test_a_password_protected_link_needs_its_password(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    conversation, _ = await _chat(history, alice)
    link = await _share(history, alice, conversation, password="open sesame")

    missing = await failure(history.GetSharedConversation(pb.GetSharedConversationRequest(token=link.token)))
    wrong = await failure(
        history.GetSharedConversation(pb.GetSharedConversationRequest(token=link.token, password="guess"))
    )
    right = await history.GetSharedConversation(
        pb.GetSharedConversationRequest(token=link.token, password="open sesame")
    )

    assert link.password_protected
    for error in (missing, wrong):
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason(error) == "SHARE_PASSWORD_INVALID"
        assert "earth" not in (error.details() or "")
    assert len(right.messages) == 2


async def test_password_guesses_are_throttled_per_link(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    conversation, _ = await _chat(history, alice)
    link = await _share(history, alice, conversation, password="correct horse")
    other = await _share(history, alice, conversation, password="correct horse")

    for _ in range(5):  # the per-address bucket's capacity
        error = await failure(
            history.GetSharedConversation(pb.GetSharedConversationRequest(token=link.token, password="guess"))
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    throttled = await failure(
        history.GetSharedConversation(
            pb.GetSharedConversationRequest(token=link.token, password="correct horse")
        )
    )

    assert throttled.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason(throttled) == "SHARE_PASSWORD_THROTTLED"
    assert (retry_delay_s(throttled) or 0) > 0
    # Another link's bucket is its own.
    opened = await history.GetSharedConversation(
        pb.GetSharedConversationRequest(token=other.token, password="correct horse")
    )
    assert len(opened.messages) == 2


async def test_views_are_counted_and_links_listed_newest_first(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    conversation, _ = await _chat(history, alice)
    older = await _share(history, alice, conversation)
    newer = await _share(history, alice, conversation)
    for _ in range(3):
        await history.GetSharedConversation(pb.GetSharedConversationRequest(token=newer.token))

    first = await history.ListShareLinks(
        pb.ListShareLinksRequest(parent=conversation, page_size=1), metadata=alice.md
    )
    second = await history.ListShareLinks(
        pb.ListShareLinksRequest(parent=conversation, page_size=1, page_token=first.next_page_token),
        metadata=alice.md,
    )

    assert [(link.name, link.view_count) for link in first.share_links] == [(newer.name, 3)]
    assert [(link.name, link.view_count) for link in second.share_links] == [(older.name, 0)]
    assert second.next_page_token == ""


async def test_create_share_link_with_a_request_id_returns_the_first_link_and_token(
    history: HistoryServiceAsyncStub, alice: Person
) -> None:
    conversation, _ = await _chat(history, alice)
    request = pb.CreateShareLinkRequest(
        parent=conversation, request_id="5b0e1c4e-8f7a-4d4e-9a51-0c7b9e3f2a11"
    )

    made = await asyncio.gather(*(history.CreateShareLink(request, metadata=alice.md) for _ in range(5)))

    assert len({m.share_link.name for m in made}) == 1
    assert {m.share_link.token for m in made} == {made[0].share_link.token}
    listed = await history.ListShareLinks(pb.ListShareLinksRequest(parent=conversation), metadata=alice.md)
    assert len(listed.share_links) == 1


async def test_bad_share_requests_change_nothing(history: HistoryServiceAsyncStub, alice: Person) -> None:
    conversation, _ = await _chat(history, alice)
    empty = await new_conversation(history, alice)

    past = await failure(
        _share(history, alice, conversation, expire_time=_at(datetime.now(UTC) - timedelta(minutes=1)))
    )
    foreign = await failure(
        _share(
            history,
            alice,
            conversation,
            last_message=f"{empty.name}/messages/7d7a3c1e-0b8f-11ef-9a3c-0242ac120002",
        )
    )
    nothing = await failure(_share(history, alice, empty.name))

    assert field_violations(past) == {"share_link.expire_time": "must be in the future"}
    assert set(field_violations(foreign)) == {"share_link.last_message"}
    assert nothing.code() == grpc.StatusCode.FAILED_PRECONDITION
    listed = await history.ListShareLinks(pb.ListShareLinksRequest(parent=conversation), metadata=alice.md)
    assert list(listed.share_links) == []

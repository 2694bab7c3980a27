"""Small helpers for svc_history's tests: people with tokens, appends, events off Pulsar."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pulsar

from parley.events.v1 import events_pb2
from parley.history.v1 import history_pb2 as pb
from parley_core.events import topic_url
from tests.integration.session.helpers import register_verified

if TYPE_CHECKING:
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub
    from parley.session.v1.session_pb2_grpc import SessionServiceAsyncStub
    from svc_session.app import SessionApp

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Person:
    user_id: str
    #: The person's own access token.
    token: str
    #: A service token of svc_router, for AppendMessage on the person's behalf.
    router_token: str

    @property
    def name(self) -> str:
        return f"users/{self.user_id}"

    @property
    def md(self) -> Metadata:
        """Call metadata of the person."""
        return (("authorization", f"Bearer {self.token}"),)

    @property
    def router(self) -> Metadata:
        """Call metadata of svc_router acting for the person."""
        return (("authorization", f"Bearer {self.router_token}"), ("x-parley-user-token", self.token))


async def new_person(app: SessionApp, stub: Any, mailbox: Path) -> Person:
    session: SessionServiceAsyncStub = stub
    email = f"history-{uuid.uuid4().hex[:10]}@parley.test"
    registered = await register_verified(session, mailbox, email)
    user_id = registered.user.name.removeprefix("users/")
    return Person(user_id, registered.credentials.access_token, await app.issue_service_token("svc_router"))


async def new_conversation(
    history: HistoryServiceAsyncStub, person: Person, **fields: Any
) -> pb.Conversation:
    reply = await history.CreateConversation(
        pb.CreateConversationRequest(parent="users/me", conversation=pb.Conversation(**fields)),
        metadata=person.md,
    )
    return reply.conversation


def message_id() -> str:
    return str(uuid.uuid1())


async def append(
    history: HistoryServiceAsyncStub,
    person: Person,
    conversation: str,
    text: str,
    *,
    parent: str = "",
    author: pb.Author = pb.AUTHOR_USER,
    request_id: str = "",
    name: str = "",
) -> pb.Message:
    message = pb.Message(
        name=name or f"{conversation}/messages/{message_id()}",
        parent_message=parent,
        author=author,
        text=text,
        model="parley-tiny" if author == pb.AUTHOR_ASSISTANT else "",
    )
    reply = await history.AppendMessage(
        pb.AppendMessageRequest(parent=conversation, message=message, request_id=request_id),
        metadata=person.router,
    )
    return reply.message


async def all_messages(
    history: HistoryServiceAsyncStub,
    person: Person,
    conversation: str,
    view: pb.MessageView = pb.MESSAGE_VIEW_ALL,
) -> list[pb.Message]:
    found: list[pb.Message] = []
    token = ""
    while True:
        page = await history.ListMessages(
            pb.ListMessagesRequest(parent=conversation, view=view, page_size=500, page_token=token),
            metadata=person.md,
        )
        found.extend(page.messages)
        token = page.next_page_token
        if not token:
            return found


class EventTap:
    """A fresh subscription to one topic, from now on (events published before are not seen)."""

    def __init__(self, client: pulsar.Client, topic: str) -> None:
        self.topic = topic
        self._consumer = client.subscribe(
            topic_url(topic),
            f"history-test-{uuid.uuid4().hex[:12]}",
            consumer_type=pulsar.ConsumerType.Exclusive,
            initial_position=pulsar.InitialPosition.Latest,
        )

    def close(self) -> None:
        self._consumer.close()

    async def take(
        self,
        wanted: Callable[[pulsar.Message], bool],
        count: int,
        timeout_s: float = 30.0,
        distinct: Callable[[pulsar.Message], object] | None = None,
    ) -> list[pulsar.Message]:
        """The first count messages that match wanted (acknowledging everything read); fewer
        when the timeout passes first. With distinct, a message whose key was seen is passed
        over: a topic written at least once may hold a redelivered event twice."""
        found: list[pulsar.Message] = []
        seen: set[object] = set()
        deadline = time.monotonic() + timeout_s
        while len(found) < count and time.monotonic() < deadline:
            try:
                message = await asyncio.to_thread(self._consumer.receive, 200)
            except pulsar.Timeout:
                continue
            self._consumer.acknowledge(message)
            if not wanted(message):
                continue
            key = distinct(message) if distinct is not None else object()
            if key not in seen:
                seen.add(key)
                found.append(message)
        return found


def keyed(user_id: str) -> Callable[[pulsar.Message], bool]:
    return lambda message: message.partition_key() == user_id


def message_created(message: pulsar.Message) -> events_pb2.MessageCreated:
    return events_pb2.MessageCreated.FromString(message.data())

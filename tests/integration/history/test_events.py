"""Events on real Pulsar: MessageCreated and ConversationDeleted after their writes, keyed by
user, and none lost while Pulsar is out of reach."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import grpc
import pulsar
import pytest

from parley.events.v1 import events_pb2
from parley.history.v1 import history_pb2 as pb
from parley_core.events import CONVERSATION_DELETED, MESSAGE_CREATED, topic_url
from parley_core.stubs import history_stub
from parley_stack.config import StackConfig
from parley_stack.testing import LocalStack, side_stack_offset
from svc_history.app import HistoryApp
from svc_session.app import SessionApp
from tests.integration.history.conftest import history_settings, pulsar_url
from tests.integration.history.helpers import (
    EventTap,
    Person,
    append,
    keyed,
    message_created,
    new_conversation,
)

if TYPE_CHECKING:
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub

pytestmark = pytest.mark.integration


@pytest.fixture
async def message_tap(pulsar_client: pulsar.Client) -> AsyncIterator[EventTap]:
    tap = EventTap(pulsar_client, MESSAGE_CREATED)
    try:
        yield tap
    finally:
        tap.close()


async def test_message_created_carries_the_message_keyed_by_its_user(
    history: HistoryServiceAsyncStub, alice: Person, message_tap: EventTap
) -> None:
    conversation = await new_conversation(history, alice)
    message = await append(history, alice, conversation.name, "index me")

    [event] = await message_tap.take(keyed(alice.user_id), 1)

    payload = message_created(event)
    assert (payload.user, payload.message, payload.author, payload.text) == (
        alice.name,
        message.name,
        "user",
        "index me",
    )
    assert event.properties()["event_id"] == payload.event_id
    assert payload.event_time == message.create_time


async def test_conversation_deleted_is_published(
    history: HistoryServiceAsyncStub, alice: Person, pulsar_client: pulsar.Client
) -> None:
    conversation = await new_conversation(history, alice)
    tap = EventTap(pulsar_client, CONVERSATION_DELETED)
    try:
        await history.DeleteConversation(
            pb.DeleteConversationRequest(name=conversation.name), metadata=alice.md
        )
        [event] = await tap.take(keyed(alice.user_id), 1)
    finally:
        tap.close()

    payload = events_pb2.ConversationDeleted.FromString(event.data())
    assert (payload.user, payload.conversation) == (alice.name, conversation.name)


@pytest.fixture(scope="module")
def spare_broker() -> Iterator[LocalStack]:
    """A Pulsar broker of this module's own, beside the session's, that a test may stop.

    Not a TCP proxy in front of the shared broker: a Pulsar client looks topics up through
    the URL it was given and then connects to the address the broker advertises, so cutting
    a proxy leaves its producers connected. Stopping the broker is the real outage.
    """
    handle = LocalStack(StackConfig(port_offset=side_stack_offset(3)), reuse=False)
    handle.ensure("pulsar")
    try:
        yield handle
    finally:
        handle.close()


def _client(url: str) -> pulsar.Client:
    return pulsar.Client(
        url, operation_timeout_seconds=10, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error)
    )


def _subscribe(client: pulsar.Client, subscription: str) -> pulsar.Consumer:
    return client.subscribe(
        topic_url(MESSAGE_CREATED),
        subscription,
        consumer_type=pulsar.ConsumerType.Exclusive,
        initial_position=pulsar.InitialPosition.Earliest,
    )


async def _receive(consumer: pulsar.Consumer, user_id: str, expected: set[str], timeout_s: float) -> set[str]:
    """The message names of user_id's MessageCreated events, once expected are among them or
    the timeout passed."""
    found: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while not expected <= found and time.monotonic() < deadline:
        try:
            event = await asyncio.to_thread(consumer.receive, 200)
        except pulsar.Timeout:
            continue
        consumer.acknowledge(event)
        if event.partition_key() == user_id:
            found.add(message_created(event).message)
    return found


async def test_appends_succeed_while_pulsar_is_stopped_and_every_event_arrives_after(
    spare_broker: LocalStack, history_servers: LocalStack, session_app: SessionApp, alice: Person
) -> None:
    url = pulsar_url(spare_broker)
    subscription = f"history-outage-{secrets.token_hex(6)}"
    client = pulsar.Client(
        url, operation_timeout_seconds=10, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error)
    )
    _subscribe(client, subscription).close()  # the durable subscription keeps what arrives from now on
    client.close()
    # A keyspace (so an outbox) of its own: only this app's relay publishes it.
    settings = history_settings(
        history_servers, keyspace=f"history_outage_{secrets.token_hex(4)}", pulsar_url=url
    )
    app = await HistoryApp.start(settings, key_source=session_app.keys)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            history = history_stub(channel)
            conversation = await new_conversation(history, alice)
            before = await append(history, alice, conversation.name, "before the outage")
            await asyncio.sleep(1)  # published while the broker is up

            await asyncio.to_thread(spare_broker.stop, ["pulsar"])
            written = [
                (await append(history, alice, conversation.name, f"during the outage {i}")).name
                for i in range(20)
            ]
            await asyncio.sleep(2)  # the relay tries, fails, and keeps the events
            pending = await app.relay.publish_pending()
            await asyncio.to_thread(spare_broker.ensure, "pulsar")

            client = _client(url)
            try:
                consumer = _subscribe(client, subscription)
                arrived = await _receive(consumer, alice.user_id, {before.name, *written}, timeout_s=30)
            finally:
                client.close()
    finally:
        await app.stop()

    assert pending == 0
    assert arrived == {before.name, *written}

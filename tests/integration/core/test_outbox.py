"""The events outbox and its relay against the local stack's real Cassandra and Pulsar.

Each test has a keyspace of its own (the outbox migration applied) and topics of its own
(a fresh topic prefix), and subscribes before anything is published. A Pulsar that cannot
be reached is a closed port; one that goes away under an open connection is a broker of a
side stack that the test stops and starts again.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pulsar
import pytest
import structlog
from cassandra.cluster import Session
from cassandra.util import uuid_from_time
from prometheus_client import CollectorRegistry

from parley_core.cassandra import connect, execute
from parley_core.events import MESSAGE_CREATED, NAMESPACE, USAGE
from parley_core.migrations import migrate
from parley_core.outbox import Outbox, OutboxEvent, OutboxRelay, PulsarClient, outbox_migration
from parley_stack.config import StackConfig
from parley_stack.testing import LocalStack, side_stack_offset

pytestmark = pytest.mark.integration

RECEIVE_MS = 10_000
QUIET = pulsar.ConsoleLogger(pulsar.LoggerLevel.Error)


@pytest.fixture(scope="module")
def servers(local_stack: LocalStack) -> LocalStack:
    local_stack.ensure("cassandra", "pulsar")
    return local_stack


@pytest.fixture(scope="module")
def broker_url(servers: LocalStack) -> str:
    running = servers.stack.table.running("pulsar")
    assert running is not None
    return running.endpoints["pulsar"]


@pytest.fixture(scope="module")
def session(servers: LocalStack) -> Iterator[Session]:
    host, port = servers.endpoint("cassandra-1", "cql")
    cluster, session = connect([host], port)
    try:
        yield session
    finally:
        cluster.shutdown()


@pytest.fixture
async def keyspace(session: Session) -> AsyncIterator[str]:
    name = f"test_outbox_{secrets.token_hex(4)}"
    await migrate(session, name, 1, [outbox_migration(1)])
    try:
        yield name
    finally:
        await asyncio.to_thread(session.execute, f"DROP KEYSPACE IF EXISTS {name}")


@pytest.fixture
def outbox(session: Session, keyspace: str) -> Outbox:
    return Outbox(session, keyspace)


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test's own: its topics are new (the lite broker keeps data)."""
    return f"persistent://{NAMESPACE}/test-{secrets.token_hex(6)}-"


@pytest.fixture(scope="module")
def client(broker_url: str) -> Iterator[pulsar.Client]:
    connection = pulsar.Client(broker_url, operation_timeout_seconds=10, logger=QUIET)
    try:
        yield connection
    finally:
        connection.close()


def _subscribe(client: pulsar.Client, topic: str) -> pulsar.Consumer:
    """One consumer on a shared subscription (what Parley's consumers use): in publish order.

    Not exclusive + earliest: pulsar-lite 0.2.0 then delivers messages many times over
    (docs/stack/pulsar.md).
    """
    return client.subscribe(topic, "test", consumer_type=pulsar.ConsumerType.Shared)


def _receive(consumer: pulsar.Consumer, count: int, timeout_ms: int = RECEIVE_MS) -> list[pulsar.Message]:
    """count messages, each acknowledged; fewer when the broker stops sending."""
    messages = []
    for _ in range(count):
        try:
            message = consumer.receive(timeout_ms)
        except pulsar.Timeout:
            break
        consumer.acknowledge(message)
        messages.append(message)
    return messages


async def receive(
    consumer: pulsar.Consumer, count: int, timeout_ms: int = RECEIVE_MS
) -> list[pulsar.Message]:
    return await asyncio.to_thread(_receive, consumer, count, timeout_ms)


def _event(key: str, topic: str = MESSAGE_CREATED, **properties: str) -> OutboxEvent:
    event_id = str(uuid.uuid4())
    return OutboxEvent(
        topic=topic, key=key, event_id=event_id, payload=f"{key}:{event_id}".encode(), properties=properties
    )


async def _rows(session: Session, keyspace: str) -> list[str]:
    """The event ids still in the outbox."""
    return [row.event_id for row in await execute(session, f"SELECT event_id FROM {keyspace}.event_outbox")]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _by_key(messages: list[pulsar.Message]) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for message in messages:
        seen.setdefault(message.partition_key(), []).append(message.properties()["event_id"])
    return seen


def _ids_by_key(events: list[OutboxEvent]) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for event in events:
        seen.setdefault(event.key, []).append(event.event_id)
    return seen


async def test_events_are_published_with_key_and_properties_in_order_per_key(
    session: Session, keyspace: str, outbox: Outbox, client: pulsar.Client, broker_url: str, prefix: str
) -> None:
    messages_topic, usage_topic = (
        _subscribe(client, prefix + MESSAGE_CREATED),
        _subscribe(client, prefix + USAGE),
    )
    users = [f"user-{i}" for i in range(4)]
    events = [
        _event(user, traceparent=f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01") for user in users
    ]
    events += [_event(user) for _ in range(5) for user in users]  # interleaved, 6 per user
    usage = _event("user-0", USAGE)
    for event in [*events, usage]:
        await outbox.add(event)
    registry = CollectorRegistry()
    relay = OutboxRelay(outbox, broker_url, topic_prefix=prefix, registry=registry)
    try:
        published = await relay.publish_pending()
    finally:
        await relay.stop()

    assert published == len(events) + 1
    received = await receive(messages_topic, len(events))
    [usage_message] = await receive(usage_topic, 1)
    assert _by_key(received) == _ids_by_key(events)
    sent = {event.event_id: event for event in events}
    for message in received:
        event = sent[message.properties()["event_id"]]
        assert message.data() == event.payload
        assert message.partition_key() == event.key
        assert message.properties() == {**event.properties, "event_id": event.event_id}
    assert (usage_message.data(), usage_message.partition_key()) == (usage.payload, "user-0")
    assert await _rows(session, keyspace) == []
    assert registry.get_sample_value(
        "parley_outbox_published_events_total", {"topic": MESSAGE_CREATED}
    ) == len(events)
    assert registry.get_sample_value("parley_outbox_pending_events") == 0


async def test_a_running_relay_publishes_an_added_event_without_waiting_for_its_poll(
    outbox: Outbox, client: pulsar.Client, broker_url: str, prefix: str
) -> None:
    consumer = _subscribe(client, prefix + MESSAGE_CREATED)
    relay = OutboxRelay(outbox, broker_url, topic_prefix=prefix, poll_s=3600)
    relay.start()
    try:
        await asyncio.sleep(0.5)  # its first full round is over: only a wake-up sends the event
        event = _event("user-1")
        await outbox.add(event)
        [message] = await receive(consumer, 1, timeout_ms=5_000)
    finally:
        await relay.stop()

    assert message.properties()["event_id"] == event.event_id


async def test_a_relay_that_cannot_reach_pulsar_keeps_every_event_and_publishes_them_once_it_can(
    session: Session, keyspace: str, outbox: Outbox, client: pulsar.Client, broker_url: str, prefix: str
) -> None:
    consumer = _subscribe(client, prefix + MESSAGE_CREATED)
    service = {"url": f"pulsar://127.0.0.1:{_closed_port()}"}

    def new_client() -> PulsarClient:
        made: PulsarClient = pulsar.Client(
            service["url"], operation_timeout_seconds=2, connection_timeout_ms=500, logger=QUIET
        )
        return made

    events = [_event(f"user-{i % 3}") for i in range(10)]
    for event in events:
        await outbox.add(event)
    registry = CollectorRegistry()
    relay = OutboxRelay(outbox, new_client, topic_prefix=prefix, send_timeout_s=2, registry=registry)
    try:
        with structlog.testing.capture_logs() as logs:
            during_outage = [await relay.publish_pending() for _ in range(2)]
            left_in_outbox = sorted(await _rows(session, keyspace))
            pending_gauge = registry.get_sample_value("parley_outbox_pending_events")
            service["url"] = broker_url  # Pulsar is back
            after_outage = await relay.publish_pending()
    finally:
        await relay.stop()

    assert during_outage == [0, 0]
    assert left_in_outbox == sorted(event.event_id for event in events)
    assert pending_gauge == len(events)
    assert (registry.get_sample_value("parley_outbox_failures_total", {"stage": "publish"}) or 0) >= 2
    warnings = [log for log in logs if log["log_level"] == "warning"]
    assert [log["event"] for log in warnings] == [
        "outbox relay cannot publish; events stay in the outbox and are retried"
    ]
    assert after_outage == len(events)
    assert "outbox relay publishing again" in [log["event"] for log in logs]
    assert _by_key(await receive(consumer, len(events))) == _ids_by_key(events)
    assert await _rows(session, keyspace) == []


async def test_a_running_relay_retries_with_backoff_until_pulsar_is_back(
    session: Session, keyspace: str, outbox: Outbox, client: pulsar.Client, broker_url: str, prefix: str
) -> None:
    consumer = _subscribe(client, prefix + MESSAGE_CREATED)
    service = {"url": f"pulsar://127.0.0.1:{_closed_port()}"}

    def new_client() -> PulsarClient:
        made: PulsarClient = pulsar.Client(
            service["url"], operation_timeout_seconds=1, connection_timeout_ms=300, logger=QUIET
        )
        return made

    events = [_event(f"user-{i % 2}") for i in range(4)]
    relay = OutboxRelay(outbox, new_client, topic_prefix=prefix, poll_s=0.2, send_timeout_s=1)
    relay.start()
    try:
        for event in events:
            await outbox.add(event)
        await asyncio.sleep(3)  # a few failed rounds
        left_during_outage = len(await _rows(session, keyspace))
        service["url"] = broker_url
        received = await receive(consumer, len(events), timeout_ms=15_000)
    finally:
        await relay.stop()

    assert left_during_outage == len(events)
    assert _by_key(received) == _ids_by_key(events)


@pytest.fixture(scope="module")
def side_broker() -> Iterator[LocalStack]:
    """A pulsar-lite of its own that a test may stop and start (the session's keeps running)."""
    handle = LocalStack(StackConfig(pulsar="lite", port_offset=side_stack_offset(4)), reuse=False)
    try:
        handle.ensure("pulsar")
        yield handle
    finally:
        handle.close()


async def test_events_added_while_the_broker_is_down_are_published_when_it_is_back(
    session: Session, keyspace: str, outbox: Outbox, side_broker: LocalStack, prefix: str
) -> None:
    running = side_broker.stack.table.running("pulsar")
    assert running is not None
    url = running.endpoints["pulsar"]
    topic = prefix + MESSAGE_CREATED
    before = _event("user-1")
    during = [_event(f"user-{i % 2}") for i in range(6)]
    relay = OutboxRelay(outbox, url, topic_prefix=prefix, send_timeout_s=2)
    try:
        setup = pulsar.Client(url, operation_timeout_seconds=10, logger=QUIET)
        _subscribe(setup, topic).close()  # the subscription keeps what comes while no one reads
        setup.close()
        await outbox.add(before)
        assert await relay.publish_pending() == 1  # the relay's producer is connected

        await asyncio.to_thread(side_broker.stop, ["pulsar"])
        for event in during:
            await outbox.add(event)
        assert await relay.publish_pending() == 0
        assert sorted(await _rows(session, keyspace)) == sorted(e.event_id for e in during)

        await asyncio.to_thread(side_broker.ensure, "pulsar")
        assert await relay.publish_pending() == len(during)
    finally:
        await relay.stop()

    reader = pulsar.Client(url, operation_timeout_seconds=10, logger=QUIET)
    try:
        received = await receive(_subscribe(reader, topic), 1 + len(during))
    finally:
        reader.close()
    assert _by_key(received) == _ids_by_key([before, *during])
    assert await _rows(session, keyspace) == []


async def test_two_relays_on_one_outbox_publish_every_event_once_and_delete_every_row(
    session: Session, keyspace: str, client: pulsar.Client, broker_url: str, prefix: str
) -> None:
    consumer = _subscribe(client, prefix + MESSAGE_CREATED)
    writer = Outbox(session, keyspace)
    events = [_event(f"user-{i % 40}") for i in range(200)]
    for event in events:
        await writer.add(event)
    relays = [
        OutboxRelay(Outbox(session, keyspace), broker_url, topic_prefix=prefix, owner=f"instance-{i}")
        for i in range(2)
    ]
    try:
        published = await asyncio.gather(*(relay.publish_pending() for relay in relays))
        # A shard the other relay held when this one looked is that relay's; nothing is left.
        published_later = await asyncio.gather(*(relay.publish_pending() for relay in relays))
    finally:
        await asyncio.gather(*(relay.stop() for relay in relays))

    received = await receive(consumer, len(events) + 1, timeout_ms=3_000)  # +1: no duplicate comes
    assert Counter(message.properties()["event_id"] for message in received) == Counter(
        event.event_id for event in events
    )
    assert _by_key(received) == _ids_by_key(events)
    assert sum(published) + sum(published_later) == len(events)
    assert await _rows(session, keyspace) == []


class _FailingClient:
    """A real client whose producers fail the sends of chosen events (as a timed-out send)."""

    def __init__(self, url: str, failing: set[str]) -> None:
        self._client = pulsar.Client(url, operation_timeout_seconds=10, logger=QUIET)
        self.failing = failing

    def create_producer(self, topic: str, **options: Any) -> _FailingProducer:
        return _FailingProducer(self._client.create_producer(topic, **options), self.failing)

    def close(self) -> None:
        self._client.close()


class _FailingProducer:
    def __init__(self, producer: pulsar.Producer, failing: set[str]) -> None:
        self._producer, self._failing = producer, failing

    def send_async(self, content: bytes, callback: Any, **options: Any) -> None:
        if options["properties"]["event_id"] in self._failing:
            callback(pulsar.Result.Timeout, None)
        else:
            self._producer.send_async(content, callback, **options)

    def close(self) -> None:
        self._producer.close()


async def test_a_row_is_deleted_only_after_its_event_was_published_and_its_key_waits_for_it(
    session: Session, keyspace: str, outbox: Outbox, client: pulsar.Client, broker_url: str, prefix: str
) -> None:
    consumer = _subscribe(client, prefix + MESSAGE_CREATED)
    first, stuck, after = _event("user-a"), _event("user-a"), _event("user-a")
    other = [_event("user-b"), _event("user-b")]
    for event in [first, stuck, after, *other]:
        await outbox.add(event)
    failing = {stuck.event_id}
    relay = OutboxRelay(outbox, lambda: _FailingClient(broker_url, failing), topic_prefix=prefix)
    try:
        published_while_failing = await relay.publish_pending()
        left = sorted(await _rows(session, keyspace))
        received_while_failing = await receive(consumer, 3)
        failing.clear()
        published_after = await relay.publish_pending()
    finally:
        await relay.stop()

    assert published_while_failing == 3
    # The failed event stays, and so does the later event of its key: order per key.
    assert left == sorted([stuck.event_id, after.event_id])
    assert _by_key(received_while_failing) == _ids_by_key([first, *other])
    assert published_after == 2
    assert _by_key(await receive(consumer, 2)) == _ids_by_key([stuck, after])
    assert await _rows(session, keyspace) == []


async def test_a_shard_leased_by_another_relay_is_left_to_it_until_the_lease_expires(
    session: Session, keyspace: str, outbox: Outbox, client: pulsar.Client, broker_url: str, prefix: str
) -> None:
    consumer = _subscribe(client, prefix + MESSAGE_CREATED)
    event = _event("user-1")
    await outbox.add(event)
    # Another instance's relay holds the shard for two seconds and then dies.
    await execute(
        session,
        f"INSERT INTO {keyspace}.event_outbox_leases (shard, owner, expires_at) "
        "VALUES (%s, 'elsewhere:1/x', toTimestamp(now()) + 2s) USING TTL 2",
        (outbox.shard_of(event.key),),
    )
    relay = OutboxRelay(outbox, broker_url, topic_prefix=prefix)
    try:
        while_leased = await relay.publish_pending()
        await asyncio.sleep(2.5)
        after_expiry = await relay.publish_pending()
    finally:
        await relay.stop()

    assert (while_leased, after_expiry) == (0, 1)
    [message] = await receive(consumer, 1)
    assert message.properties()["event_id"] == event.event_id


async def test_a_row_written_behind_the_relays_cursor_is_published_by_the_next_scan_from_the_start(
    session: Session, keyspace: str, outbox: Outbox, client: pulsar.Client, broker_url: str, prefix: str
) -> None:
    consumer = _subscribe(client, prefix + MESSAGE_CREATED)
    relay = OutboxRelay(outbox, broker_url, topic_prefix=prefix, reorder_window_s=0, full_scan_s=1)
    try:
        await outbox.add(_event("user-1"))
        assert await relay.publish_pending() == 1  # reads from the start, then from a cursor
        late = _event("user-1")
        # A writer whose clock is ten minutes behind.
        await execute(
            session,
            f"INSERT INTO {keyspace}.event_outbox (shard, id, event_id, topic, key, payload) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (
                outbox.shard_of(late.key),
                uuid_from_time(time.time() - 600),
                late.event_id,
                late.topic,
                late.key,
                late.payload,
            ),
        )
        behind_cursor = await relay.publish_pending()
        await asyncio.sleep(1.1)
        from_the_start = await relay.publish_pending()
    finally:
        await relay.stop()

    assert (behind_cursor, from_the_start) == (0, 1)
    assert [m.properties()["event_id"] for m in await receive(consumer, 2)][1] == late.event_id

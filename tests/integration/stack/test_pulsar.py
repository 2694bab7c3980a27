"""Pulsar from the local stack, through pulsar-client, on both variants.

Parley's services hand work to each other over shared and key-shared subscriptions and
rely on the broker to redeliver what a crashed or failing consumer did not acknowledge, so
each of those behaviours is checked on pulsar-lite (the default, the shared session stack)
and on Apache Pulsar standalone (the run's `apache_pulsar`, beside the test session's stack).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pulsar
import pytest

from parley_stack.servers.pulsar import NAMESPACE
from parley_stack.testing import LocalStack

pytestmark = pytest.mark.integration

RECEIVE_MS = 10_000
NACK_DELAY_MS = 100


@pytest.fixture(params=["lite", "apache"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """pulsar:// URL of a running broker of the requested variant (started on first use)."""
    if request.param == "apache":
        stack: LocalStack = request.getfixturevalue("apache_pulsar")
    else:
        stack = request.getfixturevalue("local_stack")
        if stack.config.pulsar != "lite":
            pytest.skip(f"the session stack runs pulsar={stack.config.pulsar!r}, not lite")
    stack.ensure("pulsar")
    running = stack.stack.table.running("pulsar")
    assert running is not None
    return running.endpoints["pulsar"]


@pytest.fixture
def client(broker_url: str) -> Iterator[pulsar.Client]:
    connection = pulsar.Client(
        broker_url, operation_timeout_seconds=10, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error)
    )
    try:
        yield connection
    finally:
        connection.close()


def _topic(purpose: str) -> str:
    """A fresh topic in Parley's namespace (the lite broker keeps data between sessions)."""
    return f"persistent://{NAMESPACE}/test-{purpose}-{uuid.uuid4().hex[:12]}"


def _shared(client: pulsar.Client, topic: str, **options: object) -> pulsar.Consumer:
    return client.subscribe(topic, "workers", consumer_type=pulsar.ConsumerType.Shared, **options)


def _receive_and_ack(consumer: pulsar.Consumer, count: int) -> list[bytes]:
    """Up to count payloads, each acknowledged; fewer when the broker stops sending."""
    payloads: list[bytes] = []
    for _ in range(count):
        try:
            message = consumer.receive(RECEIVE_MS)
        except pulsar.Timeout:
            break
        consumer.acknowledge(message)
        payloads.append(message.data())
    return payloads


def test_produce_consume_ack(client: pulsar.Client) -> None:
    topic = _topic("ack")
    consumer = _shared(client, topic)
    producer = client.create_producer(topic)
    for payload in (b"first", b"second"):
        producer.send(payload)

    received = [consumer.receive(RECEIVE_MS) for _ in range(2)]
    for message in received:
        consumer.acknowledge(message)
    consumer.close()

    assert [m.data() for m in received] == [b"first", b"second"]
    # Acknowledged: a new consumer on the subscription gets nothing back.
    again = _shared(client, topic)
    with pytest.raises(pulsar.Timeout):
        again.receive(1_000)


def test_closed_consumer_without_ack_is_redelivered(client: pulsar.Client) -> None:
    topic = _topic("close")
    first = _shared(client, topic)
    client.create_producer(topic).send(b"order #1")
    assert first.receive(RECEIVE_MS).data() == b"order #1"
    first.close()  # no acknowledgement

    second = _shared(client, topic)
    message = second.receive(RECEIVE_MS)
    second.acknowledge(message)

    assert message.data() == b"order #1"


# A consumer in a process of its own: it prints what it received, then waits to be killed.
_DOOMED_CONSUMER = """
import sys, time, pulsar
client = pulsar.Client(sys.argv[1], logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
consumer = client.subscribe(sys.argv[2], "workers", consumer_type=pulsar.ConsumerType.Shared)
print("subscribed", flush=True)
print(consumer.receive(10_000).data().decode(), flush=True)
time.sleep(600)
"""


def test_killed_consumer_process_messages_are_redelivered(client: pulsar.Client, broker_url: str) -> None:
    topic = _topic("kill")
    doomed = subprocess.Popen(
        [sys.executable, "-c", _DOOMED_CONSUMER, broker_url, topic], stdout=subprocess.PIPE, text=True
    )
    try:
        assert doomed.stdout is not None
        assert doomed.stdout.readline().strip() == "subscribed"
        client.create_producer(topic).send(b"order #2")
        assert doomed.stdout.readline().strip() == "order #2"
    finally:
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait()
        if doomed.stdout is not None:
            doomed.stdout.close()

    survivor = _shared(client, topic)
    message = survivor.receive(RECEIVE_MS)
    survivor.acknowledge(message)

    assert message.data() == b"order #2"


def test_key_shared_redelivers_all_unacked_messages_of_a_closed_consumer_in_order(
    client: pulsar.Client, request: pytest.FixtureRequest
) -> None:
    if request.node.callspec.params["broker_url"] == "lite":
        # A known pulsar-lite 0.2.0 bug, kept visible: strict, so a fixed release turns this
        # into a failure that asks for the marker to go. Parley's consumers therefore use
        # shared subscriptions (docs/adr/0003-local-stack.md).
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="pulsar-lite 0.2.0 redelivers only the first unacked message of a key-shared key",
            )
        )
    topic = _topic("keyclose")
    first = client.subscribe(topic, "router", consumer_type=pulsar.ConsumerType.KeyShared)
    producer = client.create_producer(topic, batching_enabled=False)
    turns = [b"conversation-7/0", b"conversation-7/1", b"conversation-7/2"]
    for payload in turns:
        producer.send(payload, partition_key="conversation-7")
    assert [first.receive(RECEIVE_MS).data() for _ in turns] == turns
    first.close()  # no acknowledgement

    second = client.subscribe(topic, "router", consumer_type=pulsar.ConsumerType.KeyShared)

    assert _receive_and_ack(second, len(turns)) == turns


def test_negative_ack_is_redelivered(client: pulsar.Client) -> None:
    topic = _topic("nack")
    consumer = _shared(client, topic, negative_ack_redelivery_delay_ms=NACK_DELAY_MS)
    client.create_producer(topic).send(b"retry me")

    first = consumer.receive(RECEIVE_MS)
    consumer.negative_acknowledge(first)
    second = consumer.receive(RECEIVE_MS)
    consumer.acknowledge(second)

    assert (first.data(), first.redelivery_count()) == (b"retry me", 0)
    assert (second.data(), second.redelivery_count()) == (b"retry me", 1)


def test_dead_letter_policy_moves_a_message_after_max_redeliveries(client: pulsar.Client) -> None:
    topic = _topic("dlq")
    dead_letters = client.subscribe(f"{topic}-DLQ", "inspect", consumer_type=pulsar.ConsumerType.Shared)
    consumer = _shared(
        client,
        topic,
        negative_ack_redelivery_delay_ms=NACK_DELAY_MS,
        dead_letter_policy=pulsar.ConsumerDeadLetterPolicy(
            max_redeliver_count=2, dead_letter_topic=f"{topic}-DLQ"
        ),
    )
    client.create_producer(topic).send(b"poison")

    counts = []
    for _ in range(3):
        message = consumer.receive(RECEIVE_MS)
        counts.append((message.data(), message.redelivery_count()))
        consumer.negative_acknowledge(message)
    dead = dead_letters.receive(RECEIVE_MS)
    dead_letters.acknowledge(dead)

    assert counts == [(b"poison", 0), (b"poison", 1), (b"poison", 2)]
    assert dead.data() == b"poison"
    with pytest.raises(pulsar.Timeout):
        consumer.receive(1_000)


def test_key_shared_keeps_each_key_on_one_consumer_in_order(client: pulsar.Client) -> None:
    topic = _topic("keys")
    consumers = {
        name: client.subscribe(
            topic, "router", consumer_type=pulsar.ConsumerType.KeyShared, consumer_name=name
        )
        for name in ("a", "b")
    }
    # Key-based batching: a default batch mixes keys and is delivered to one consumer whole.
    producer = client.create_producer(topic, batching_type=pulsar.BatchingType.KeyBased)
    keys = [f"conversation-{i}" for i in range(16)]
    for turn in range(3):
        for key in keys:
            producer.send_async(f"{key}/{turn}".encode(), None, partition_key=key)
    producer.flush()

    seen: dict[str, list[tuple[str, str]]] = {}  # key -> [(consumer, payload)]
    # All 48 usually arrive within a second; a loaded CI machine once left one of them
    # undelivered after 10 s on pulsar-lite. Waiting longer costs nothing when they come.
    expected, deadline = 3 * len(keys), time.monotonic() + 3 * RECEIVE_MS / 1000
    while sum(map(len, seen.values())) < expected and time.monotonic() < deadline:
        for name, consumer in consumers.items():
            try:
                message = consumer.receive(200)
            except pulsar.Timeout:
                continue
            consumer.acknowledge(message)
            seen.setdefault(message.partition_key(), []).append((name, message.data().decode()))

    assert sorted(seen) == sorted(keys)
    for key, deliveries in seen.items():
        assert len({name for name, _ in deliveries}) == 1, f"{key} went to both consumers"
        # Pulsar delivers at least once: a redelivery may repeat a message (pulsar-lite did,
        # once, under heavy load), but never reorders a key.
        payloads = [payload for _, payload in deliveries]
        assert list(dict.fromkeys(payloads)) == [f"{key}/{turn}" for turn in range(3)]
    assert {deliveries[0][0] for deliveries in seen.values()} == {"a", "b"}

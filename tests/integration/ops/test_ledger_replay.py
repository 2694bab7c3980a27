"""Runbook, "Replay the ledger from Pulsar": replayed usage events bill nothing twice.

In production a replay is `pulsar-admin topics reset-cursor` on the ledger's subscription;
pulsar-lite has no admin API, so here the user's events are read back from the start of the
`usage` topic and published again, which is what the ledger sees after a reset: the same
events (same event ids) a second time. Each is counted as a duplicate; the user's usage, the
line items and the spend counter stay as they were."""

from __future__ import annotations

import asyncio
import secrets
import time

import grpc
import pulsar
import pytest

from parley.ledger.v1 import ledger_pb2
from parley_core.events import USAGE, topic_url
from parley_core.stubs import ledger_stub
from parley_stack.testing import LocalStack
from tests.integration.monitoring.helpers import (
    Person,
    eventually,
    person_at_edge,
    sample,
    scrape,
    turn_at_edge,
)

pytestmark = pytest.mark.integration


def _events_of(url: str, user_id: str, wanted: int) -> list[pulsar.Message]:
    """The user's usage events, read from the topic's start on a subscription of our own."""
    client = pulsar.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        consumer = client.subscribe(
            topic_url(USAGE),
            f"runbook-replay-{secrets.token_hex(4)}",
            initial_position=pulsar.InitialPosition.Earliest,
        )
        found: list[pulsar.Message] = []
        deadline = time.monotonic() + 60
        while len(found) < wanted and time.monotonic() < deadline:
            try:
                message = consumer.receive(timeout_millis=2000)
            except pulsar.Timeout:
                continue
            consumer.acknowledge(message)
            if message.partition_key() == user_id:
                found.append(message)
        consumer.unsubscribe()
        return found
    finally:
        client.close()


def _publish(url: str, messages: list[pulsar.Message]) -> None:
    client = pulsar.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        producer = client.create_producer(topic_url(USAGE))
        for message in messages:
            key = message.partition_key()
            producer.send(message.data(), properties=message.properties(), partition_key=key)
        producer.flush()
    finally:
        client.close()


async def _usage(edge: str, person: Person) -> ledger_pb2.GetUsageResponse:
    async with grpc.aio.insecure_channel(edge) as channel:
        usage: ledger_pb2.GetUsageResponse = await ledger_stub(channel).GetUsage(
            ledger_pb2.GetUsageRequest(name="users/me"), metadata=person.md, timeout=10
        )
        return usage


async def test_replayed_usage_events_are_duplicates_and_bill_nothing(local_stack: LocalStack) -> None:
    local_stack.ensure("envoy")
    host, port = local_stack.endpoint("envoy", "public")
    edge = f"{host}:{port}"

    def ledger(name: str, **labels: str) -> float:
        return sample(scrape(local_stack, "svc_ledger"), name, **labels)

    priced = ledger("parley_ledger_events_total", outcome="priced")
    person = await person_at_edge(local_stack, edge)
    for text in ("first [scripted ttft_ms=10]", "second [scripted ttft_ms=10]"):
        await turn_at_edge(edge, person, text)
    await eventually(lambda: ledger("parley_ledger_events_total", outcome="priced") >= priced + 2, "pricing")
    usage = await _usage(edge, person)
    assert usage.cost.micros > 0
    spent = ledger("parley_ledger_spend_micros_total")
    duplicates = ledger("parley_ledger_events_total", outcome="duplicate")

    url = local_stack.stack.table.running("pulsar").endpoints["pulsar"]  # type: ignore[union-attr]
    replayed = await asyncio.to_thread(_events_of, url, person.user_id, 2)
    assert len(replayed) == 2
    await asyncio.to_thread(_publish, url, replayed)

    await eventually(
        lambda: ledger("parley_ledger_events_total", outcome="duplicate") >= duplicates + 2,
        "the ledger to take the replayed events as duplicates",
    )
    assert await _usage(edge, person) == usage
    # The counter is the whole ledger's: other users' turns may still be priced meanwhile,
    # but billing the replay again would have added at least this user's whole cost.
    assert ledger("parley_ledger_spend_micros_total") - spent < usage.cost.micros

"""Helpers for svc_ledger's tests: usage events as the router writes them, waiting for the
ledger, and the exact cost of a set of events computed apart from the ledger's code."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import pulsar

from parley.common.v1 import common_pb2
from parley.events.v1 import events_pb2
from parley_core.events import USAGE, topic_url
from parley_core.wire import timestamp

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Usage:
    """One usage event's facts, as a test chose them."""

    user_id: str
    model: str
    input_tokens: int
    output_tokens: int
    when: datetime
    tier: str = "free"
    api_key: str = ""
    finish_reason: str = "stop"
    estimated: bool = False
    event_id: str = ""

    def event(self) -> events_pb2.TurnCompleted:
        event_id = self.event_id or uuid.uuid4().hex
        usage = common_pb2.TokenUsage(input_tokens=self.input_tokens, output_tokens=self.output_tokens)
        event = events_pb2.TurnCompleted(
            event_id=event_id,
            event_time=timestamp(self.when),
            user=f"users/{self.user_id}",
            tier=self.tier,
            turn=f"users/{self.user_id}/conversations/c{event_id[:8]}/turns/t{event_id}",
            model=f"models/{self.model}",
            finish_reason=self.finish_reason,
            api_key=f"users/{self.user_id}/apiKeys/{self.api_key}" if self.api_key else "",
        )
        if self.estimated:
            event.estimated_usage.CopyFrom(usage)
        else:
            event.usage.CopyFrom(usage)
        return event


def cost(input_tokens: int, output_tokens: int, input_price: int, output_price: int) -> int:
    """ADR 0013's rule, written out again: the exact sum, rounded up once."""
    exact = input_tokens * input_price + output_tokens * output_price
    return exact // 1_000_000 + (1 if exact % 1_000_000 else 0)


def publish(producer: pulsar.Producer, events: list[events_pb2.TurnCompleted]) -> None:
    """Publish as the router's outbox does: keyed by user, the event id as a property."""
    for event in events:
        producer.send_async(
            event.SerializeToString(),
            None,
            partition_key=event.user.removeprefix("users/"),
            properties={"event_id": event.event_id},
        )
    producer.flush()


def usage_producer(client: pulsar.Client) -> pulsar.Producer:
    return client.create_producer(topic_url(USAGE), batching_enabled=True, block_if_queue_full=True)


T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout_s: float = 60.0
) -> T:
    """Call probe until done(result), then return the result; AssertionError at the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not done after {timeout_s} s: {result!r}")
        await asyncio.sleep(0.2)

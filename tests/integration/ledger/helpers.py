"""Helpers for svc_ledger's tests: usage events as the router writes them, waiting for the
ledger, and the exact cost of a set of events computed apart from the ledger's code."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import pulsar
from prometheus_client.parser import text_string_to_metric_families

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


def relay_producer(client: pulsar.Client) -> pulsar.Producer:
    """A usage producer set up as the outbox relay's: one message per event, never a batch
    of several keys, so a Key_Shared subscription hands each user to one consumer."""
    return client.create_producer(topic_url(USAGE), batching_enabled=False, block_if_queue_full=True)


_REPOSITORY = Path(__file__).resolve().parents[3]


class LedgerProcess:
    """`python -m svc_ledger` as a real process: its JSON log in a file, its metrics over HTTP."""

    def __init__(self, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path
        self.metrics_port = 0

    @classmethod
    async def start(
        cls, settings: Mapping[str, str], log_path: Path, timeout_s: float = 90.0
    ) -> LedgerProcess:
        """Start a ledger with these PARLEY_LEDGER_* settings (and no other PARLEY_ variable)
        and wait for its "serving" line, which names its metrics port."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("PARLEY_")}
        env.update(settings)
        log = _append(log_path)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "svc_ledger",
                cwd=_REPOSITORY,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        finally:
            log.close()
        ledger = cls(process, log_path)
        try:
            ledger.metrics_port = await ledger._serving(timeout_s)
        except BaseException:
            await ledger.kill()
            raise
        return ledger

    async def _serving(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.log_lines():
                if line.get("event") == "serving" and line.get("metrics_port"):
                    return int(line["metrics_port"])
            if self.process.returncode is not None:
                raise AssertionError(f"the ledger exited with {self.process.returncode}:\n{self.log_tail()}")
            await asyncio.sleep(0.1)
        raise AssertionError(f"the ledger was not serving after {timeout_s} s:\n{self.log_tail()}")

    def log_lines(self) -> list[dict[str, Any]]:
        """The process's JSON log lines so far (its other lines are skipped)."""
        lines: list[dict[str, Any]] = []
        for text in self.log_path.read_text(errors="replace").splitlines():
            try:
                line = json.loads(text)
            except ValueError:
                continue
            if isinstance(line, dict):
                lines.append(line)
        return lines

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    async def metric(self, name: str, **labels: str) -> float:
        """One sample of the process's metrics endpoint; 0 when it has not been counted yet."""
        async with httpx.AsyncClient(timeout=5.0) as http:
            reply = await http.get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        reply.raise_for_status()
        for family in text_string_to_metric_families(reply.text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no last acknowledgement."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()


def _append(path: Path) -> IO[bytes]:
    return path.open("ab")


async def subscription_stats(admin_url: str, subscription: str) -> dict[str, Any]:
    """Apache Pulsar's stats of one subscription of the usage topic ({} while it has none)."""
    topic = topic_url(USAGE).removeprefix("persistent://")
    async with httpx.AsyncClient(timeout=10.0) as http:
        reply = await http.get(f"{admin_url}/admin/v2/persistent/{topic}/stats")
    reply.raise_for_status()
    found: dict[str, Any] = reply.json().get("subscriptions", {}).get(subscription, {})
    return found

"""Driving the running stack for the monitoring and ops tests: a verified person at the
edge, one chat turn through Envoy, and each process's metrics."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import httpx

from parley.chat.v1 import chat_pb2
from parley_core.stubs import chat_stub, session_stub
from parley_stack.testing import LocalStack
from tests.integration.monitoring.promql import Exposition
from tests.integration.router.helpers import Transcript, collect, turn_input
from tests.integration.session.helpers import register_verified

#: (process, endpoint) of every metrics endpoint of the stack's Parley processes.
SERVICE_METRICS = (
    ("svc_session", "metrics"),
    ("svc_history", "metrics"),
    ("svc_history-indexer", "metrics"),
    ("svc_router", "metrics"),
    ("svc_ledger", "metrics"),
)


def metrics_url(stack: LocalStack, process: str) -> str:
    if process == "envoy":
        host, port = stack.endpoint("envoy", "admin")
        return f"http://{host}:{port}/stats/prometheus"
    host, port = stack.endpoint(process, "metrics")
    return f"http://{host}:{port}/metrics"


def scrape(stack: LocalStack, process: str) -> str:
    reply = httpx.get(metrics_url(stack, process), timeout=10)
    reply.raise_for_status()
    return reply.text


def exposition(stack: LocalStack, processes: tuple[str, ...] | None = None) -> Exposition:
    """Every sample the processes (default: the services, the indexer and Envoy) export now."""
    seen = Exposition()
    for process in processes or (*(p for p, _ in SERVICE_METRICS), "envoy"):
        seen.add(scrape(stack, process))
    return seen


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of name's samples whose labels include labels (0 when there are none)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        if series.partition("{")[0] != name:
            continue
        if all(f'{key}="{wanted}"' in series for key, wanted in labels.items()):
            total += float(value)
    return total


@dataclass(frozen=True)
class Person:
    """A verified account made through the edge."""

    user_id: str
    md: tuple[tuple[str, str], ...]


async def person_at_edge(stack: LocalStack, edge: str) -> Person:
    async with grpc.aio.insecure_channel(edge) as channel:
        registered = await register_verified(
            session_stub(channel), stack.config.data_dir("mailbox"), f"ops-{secrets.token_hex(5)}@parley.test"
        )
    return Person(
        registered.user.name.removeprefix("users/"),
        (("authorization", f"Bearer {registered.credentials.access_token}"),),
    )


async def turn_at_edge(edge: str, person: Person, text: str) -> Transcript:
    """One StreamTurn through Envoy to parley-scripted, read to its end."""
    async with grpc.aio.insecure_channel(edge) as channel:
        return await collect(
            chat_stub(channel).StreamTurn(
                chat_pb2.StreamTurnRequest(input=turn_input(text)), metadata=person.md, timeout=60
            )
        )


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], what: str, timeout_s: float = 30, every_s: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(every_s)

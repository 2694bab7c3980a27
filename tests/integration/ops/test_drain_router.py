"""Runbook, "Drain a router": SIGTERM turns a router NOT_SERVING at once (Envoy's health
checks and the readiness probe send new turns elsewhere), the turns it runs finish, and
the process exits cleanly. Run against a second router beside the stack's own."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2

from parley.chat.v1 import chat_pb2
from parley_core.stubs import chat_stub, health_stub
from parley_stack.config import REPO_ROOT
from parley_stack.servers import load
from parley_stack.servers.services import grpc_serving
from parley_stack.testing import LocalStack
from tests.integration.monitoring.helpers import person_at_edge
from tests.integration.router.helpers import turn_input

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def second_router(local_stack: LocalStack) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    local_stack.ensure("envoy")
    service = load("svc_router", local_stack.config)
    port = _free_port()
    env = {
        **service.environment(),  # type: ignore[attr-defined]
        "PARLEY_ROUTER_PORT": str(port),
        "PARLEY_ROUTER_METRICS_PORT": str(_free_port()),
        "PARLEY_ROUTER_SHUTDOWN_GRACE_S": "30",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "svc_router"], env=env, cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not grpc_serving("127.0.0.1", port):
            assert process.poll() is None, "the second router exited at start"
            assert time.monotonic() < deadline, "the second router did not become SERVING"
            time.sleep(0.2)
        yield process, f"127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_sigterm_says_not_serving_then_finishes_the_running_turn(
    local_stack: LocalStack, second_router: tuple[subprocess.Popen[bytes], str]
) -> None:
    process, target = second_router
    host, port = local_stack.endpoint("envoy", "public")
    person = await person_at_edge(local_stack, f"{host}:{port}")
    # Ten tokens at five a second: about two seconds of answer.
    text = "drain me [scripted ttft_ms=10 tokens_per_second=5 reply_tokens=10]"
    async with grpc.aio.insecure_channel(target) as channel:
        stream = chat_stub(channel).StreamTurn(
            chat_pb2.StreamTurnRequest(input=turn_input(text)), metadata=person.md, timeout=60
        )
        events: list[chat_pb2.TurnEvent] = []
        while len([e for e in events if e.WhichOneof("kind") == "delta"]) < 1:
            reply = await stream.read()
            assert isinstance(reply, chat_pb2.StreamTurnResponse)
            events.append(reply.event)
        process.send_signal(signal.SIGTERM)
        health = health_stub(channel)
        for _ in range(50):
            checked = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            if checked.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            await asyncio.sleep(0.05)
        assert checked.status == health_pb2.HealthCheckResponse.NOT_SERVING
        while (reply := await stream.read()) is not grpc.aio.EOF:
            assert isinstance(reply, chat_pb2.StreamTurnResponse)
            events.append(reply.event)
    [completed] = [e.completed for e in events if e.WhichOneof("kind") == "completed"]
    assert completed.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert completed.usage.output_tokens == 10
    assert await asyncio.to_thread(process.wait, 30) == 0

"""The shared server caps concurrent calls: the ones over `max_concurrent_rpcs` are refused
with RESOURCE_EXHAUSTED at once instead of queueing without bound."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from parley.session.v1 import session_pb2 as pb
from parley_core.server import start_server
from parley_core.servicer import add_servicer
from parley_core.settings import ServiceSettings
from parley_core.stubs import session_stub


class Held:
    """GetCurrentUser waits until released."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def GetCurrentUser(
        self, request: pb.GetCurrentUserRequest, context: Any
    ) -> pb.GetCurrentUserResponse:
        self.entered.set()
        await self.release.wait()
        return pb.GetCurrentUserResponse(user=pb.User(name="users/held"))


async def _once_a_slot_is_free(stub: Any) -> pb.GetCurrentUserResponse:
    """grpc frees the finished call's slot a moment after its reply arrives."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2
    while True:
        try:
            reply: pb.GetCurrentUserResponse = await stub.GetCurrentUser(
                pb.GetCurrentUserRequest(), timeout=5
            )
            return reply
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or loop.time() > deadline:
                raise
            await asyncio.sleep(0.01)


def test_the_default_cap_is_a_thousand_calls() -> None:
    assert ServiceSettings().max_concurrent_rpcs == 1000


async def test_calls_over_the_cap_are_resource_exhausted() -> None:
    held = Held()

    async def register(server: grpc.aio.Server) -> list[str]:
        return [add_servicer(server, pb.DESCRIPTOR.services_by_name["SessionService"], held)]

    settings = ServiceSettings(metrics_port=-1, shutdown_grace_s=1, max_concurrent_rpcs=1)
    running = await start_server(settings, register)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = session_stub(channel)
            first = asyncio.ensure_future(stub.GetCurrentUser(pb.GetCurrentUserRequest()))
            await asyncio.wait_for(held.entered.wait(), 5)
            over: grpc.StatusCode | None = None
            try:
                await stub.GetCurrentUser(pb.GetCurrentUserRequest(), timeout=5)
            except grpc.aio.AioRpcError as error:
                over = error.code()
            held.release.set()
            reply = await first
            after = await _once_a_slot_is_free(stub)
    finally:
        await running.stop()

    assert over == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reply.user.name == after.user.name == "users/held"

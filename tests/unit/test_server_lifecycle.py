"""The shared server: typed clients of both flavours, and a graceful stop that drains calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import grpc
import pytest
import redis
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpclib.client import Channel

from parley.session.v1 import session_pb2
from parley_bp.parley.session.v1 import GetCurrentUserRequest, Role, SessionServiceStub
from parley_core.errors import details_of
from parley_core.server import start_server
from parley_core.servicer import add_servicer
from parley_core.settings import ServiceSettings
from parley_core.stubs import health_stub, session_stub

SERVICE = session_pb2.DESCRIPTOR.services_by_name["SessionService"]


class SlowSessionServicer:
    """A servicer for these tests only: GetCurrentUser waits until released."""

    def __init__(self) -> None:
        """Events are created on the test's loop."""
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def GetCurrentUser(
        self, request: session_pb2.GetCurrentUserRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> session_pb2.GetCurrentUserResponse:
        self.entered.set()
        await self.release.wait()
        return session_pb2.GetCurrentUserResponse(
            user=session_pb2.User(name="users/42", email="ada@example.com", role=session_pb2.ROLE_ADMIN)
        )


def _register(servicer: SlowSessionServicer) -> Callable[[grpc.aio.Server], Awaitable[Sequence[str]]]:
    async def register(server: grpc.aio.Server) -> Sequence[str]:
        return [add_servicer(server, SERVICE, servicer)]

    return register


async def test_betterproto_grpclib_client_calls_the_grpcio_server() -> None:
    servicer = SlowSessionServicer()
    servicer.release.set()
    running = await start_server(ServiceSettings(metrics_port=-1), _register(servicer))
    channel = Channel("127.0.0.1", running.port)
    try:
        reply = await SessionServiceStub(channel).get_current_user(GetCurrentUserRequest())
    finally:
        channel.close()
        await running.stop()
    assert reply.user is not None
    assert reply.user.name == "users/42"
    assert reply.user.email == "ada@example.com"
    assert reply.user.role == Role.ADMIN


async def test_stop_drains_an_in_flight_call_and_refuses_new_ones() -> None:
    servicer = SlowSessionServicer()
    running = await start_server(ServiceSettings(metrics_port=-1, shutdown_grace_s=5), _register(servicer))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = session_stub(channel)
        health = health_stub(channel)
        in_flight = asyncio.ensure_future(stub.GetCurrentUser(session_pb2.GetCurrentUserRequest()))
        await asyncio.wait_for(servicer.entered.wait(), 5)

        stopping = asyncio.ensure_future(running.stop())
        await asyncio.sleep(0.2)
        assert not stopping.done(), "stop must wait for the in-flight call"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health.Check(health_pb2.HealthCheckRequest(service=SERVICE.full_name), timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        servicer.release.set()
        reply = await asyncio.wait_for(in_flight, 5)
        await asyncio.wait_for(stopping, 5)
    assert reply.user.name == "users/42"


async def test_health_says_not_serving_during_the_drain_delay() -> None:
    servicer = SlowSessionServicer()
    settings = ServiceSettings(metrics_port=-1, drain_delay_s=0.5, shutdown_grace_s=1)
    running = await start_server(settings, _register(servicer))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        health = health_stub(channel)
        stopping = asyncio.ensure_future(running.stop())
        await asyncio.sleep(0.1)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await asyncio.wait_for(stopping, 5)


class _FailingServicer:
    """For these tests only: GetCurrentUser fails the way a broken dependency or a bug does."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def GetCurrentUser(
        self, request: session_pb2.GetCurrentUserRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> session_pb2.GetCurrentUserResponse:
        raise self.error


async def _fail_with(error: Exception) -> grpc.aio.AioRpcError:
    servicer = _FailingServicer(error)

    async def register(server: grpc.aio.Server) -> Sequence[str]:
        return [add_servicer(server, SERVICE, servicer)]

    running = await start_server(ServiceSettings(metrics_port=-1, shutdown_grace_s=1), register)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await session_stub(channel).GetCurrentUser(session_pb2.GetCurrentUserRequest())
    finally:
        await running.stop()
    return caught.value


async def test_a_down_dependency_is_unavailable_with_retry_info() -> None:
    error = await _fail_with(redis.exceptions.ConnectionError("Error 111 connecting to 10.1.2.3:6379"))

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "10.1.2.3" not in (error.details() or "")
    details = details_of(error)
    [info] = [d for d in details if isinstance(d, error_details_pb2.ErrorInfo)]
    assert (info.reason, info.metadata["backend"]) == ("BACKEND_UNAVAILABLE", "redis")
    assert any(isinstance(d, error_details_pb2.RetryInfo) for d in details)


async def test_a_bug_is_internal_without_its_message() -> None:
    error = await _fail_with(KeyError("secret internals"))

    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "internal error"

"""svc_session boots on free ports: the public one answers health and reflection for its
API, and Envoy's rate limit service lives on an internal listener of its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from parley_core.stubs import health_stub, reflection_stub
from svc_session.app import SessionApp

if TYPE_CHECKING:
    from envoy.service.ratelimit.v3.rls_pb2_grpc import RateLimitServiceAsyncStub

pytestmark = pytest.mark.integration

RLS = "envoy.service.ratelimit.v3.RateLimitService"


async def _services(channel: grpc.aio.Channel) -> set[str]:
    call = reflection_stub(channel).ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    reply = await call.read()
    await call.done_writing()
    return {s.name for s in reply.list_services_response.service}


def _rls(channel: grpc.aio.Channel) -> RateLimitServiceAsyncStub:
    return cast("RateLimitServiceAsyncStub", rls_pb2_grpc.RateLimitServiceStub(channel))


def _spend(address: str) -> rls_pb2.RateLimitRequest:
    entry = ratelimit_pb2.RateLimitDescriptor.Entry(key="remote_address", value=address)
    return rls_pb2.RateLimitRequest(
        domain="parley",
        descriptors=[ratelimit_pb2.RateLimitDescriptor(entries=[entry])],
        hits_addend=1_000_000,
    )


async def test_health_and_reflection(session_app: SessionApp, channel: grpc.aio.Channel) -> None:
    for service in ("", "parley.session.v1.SessionService"):
        reply = await health_stub(channel).Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    assert "parley.session.v1.SessionService" in await _services(channel)


async def test_the_rate_limit_service_is_not_on_the_public_port(
    session_app: SessionApp, channel: grpc.aio.Channel
) -> None:
    # A caller of the public port could otherwise drain anyone's buckets (here an address's).
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _rls(channel).ShouldRateLimit(_spend("192.0.2.10"))

    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert RLS not in await _services(channel)


async def test_the_rate_limit_service_answers_on_its_internal_listener(session_app: SessionApp) -> None:
    assert session_app.internal_port != session_app.port
    async with grpc.aio.insecure_channel(
        f"{session_app.settings.internal_host}:{session_app.internal_port}"
    ) as internal:
        health = await health_stub(internal).Check(health_pb2.HealthCheckRequest(service=RLS))
        reply = await _rls(internal).ShouldRateLimit(_spend("192.0.2.11"))

    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert reply.overall_code == rls_pb2.RateLimitResponse.OVER_LIMIT

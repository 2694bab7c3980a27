"""svc_session boots on a free port and answers health and reflection."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from parley_core.stubs import health_stub, reflection_stub
from svc_session.app import SessionApp

pytestmark = pytest.mark.integration


async def test_health_and_reflection(session_app: SessionApp, channel: grpc.aio.Channel) -> None:
    for service in ("", "parley.session.v1.SessionService", "envoy.service.ratelimit.v3.RateLimitService"):
        reply = await health_stub(channel).Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    call = reflection_stub(channel).ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    reply = await call.read()
    await call.done_writing()
    names = {s.name for s in reply.list_services_response.service}
    assert {"parley.session.v1.SessionService", "envoy.service.ratelimit.v3.RateLimitService"} <= names

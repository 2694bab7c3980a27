"""Envoy from the local stack: its admin answers LIVE, it routes gRPC and gRPC-Web, and it
names the real client to the sign-in rate limits."""

from __future__ import annotations

import secrets
import struct

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2

from parley.session.v1 import session_pb2
from parley_core.errors import details_of
from parley_core.stubs import health_stub, session_stub
from parley_stack.testing import LocalStack
from tests.integration.edge.grpc_web import call, client_from, random_loopback

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def envoy(local_stack: LocalStack) -> LocalStack:
    local_stack.ensure("envoy")
    return local_stack


def test_admin_ready_answers_live(envoy: LocalStack) -> None:
    host, port = envoy.endpoint("envoy", "admin")
    reply = httpx.get(f"http://{host}:{port}/ready", timeout=5)
    assert reply.status_code == 200
    assert reply.text.strip() == "LIVE"


async def test_native_grpc_signs_up_and_in_through_the_proxy(envoy: LocalStack) -> None:
    host, port = envoy.endpoint("envoy", "public")
    email = f"edge-{secrets.token_hex(4)}@parley.test"
    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        stub = session_stub(channel)
        registered = await stub.Register(
            session_pb2.RegisterRequest(email=email, password="through the front door", display_name="Edge"),
            # A client naming its own address: Envoy overwrites it with the real one.
            metadata=(("x-parley-client-address", "198.51.100.77"),),
            timeout=10,
        )
        token = (("authorization", f"Bearer {registered.credentials.access_token}"),)
        me = await stub.GetCurrentUser(session_pb2.GetCurrentUserRequest(), metadata=token, timeout=5)
        sessions = await stub.ListSessions(session_pb2.ListSessionsRequest(parent="users/me"), metadata=token)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetCurrentUser(session_pb2.GetCurrentUserRequest(), timeout=5)
    assert me.user.email == email
    assert [s.client_address for s in sessions.sessions] == [host]
    # The service's own refusal (with its ErrorInfo) comes back through the proxy untouched.
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    [info] = [d for d in details_of(caught.value) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert info.reason == "UNAUTHENTICATED"


async def test_unknown_path_is_not_routed(envoy: LocalStack) -> None:
    host, port = envoy.endpoint("envoy", "public")
    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_stub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_grpc_web_call_gets_a_grpc_web_answer_with_cors(envoy: LocalStack) -> None:
    host, port = envoy.endpoint("envoy", "public")
    body = session_pb2.GetCurrentUserRequest().SerializeToString()
    frame = struct.pack(">BI", 0, len(body)) + body
    reply = httpx.post(
        f"http://{host}:{port}/parley.session.v1.SessionService/GetCurrentUser",
        content=frame,
        headers={
            "content-type": "application/grpc-web+proto",
            "x-grpc-web": "1",
            "origin": "http://localhost:5173",
        },
        timeout=5,
    )
    # Refused by the edge (jwt_authn): HTTP 401 with the gRPC status in the headers, where a
    # gRPC-Web client reads it (a service's own refusal comes as 200, trailers-only).
    assert reply.status_code == 401
    assert reply.headers["content-type"].startswith("application/grpc-web")
    assert reply.headers["access-control-allow-origin"] == "http://localhost:5173"
    # A trailers-only answer: the status travels in headers.
    status = reply.headers.get("grpc-status")
    if status is None:  # or in a trailer frame (flag 0x80) in the body
        assert reply.content[0] == 0x80
        status = reply.content[5:].decode().split("grpc-status:")[1].split("\r\n")[0].strip()
    assert status == str(grpc.StatusCode.UNAUTHENTICATED.value[0])


def test_a_rotating_x_forwarded_for_does_not_escape_the_address_bucket(envoy: LocalStack) -> None:
    # Regression: without use_remote_address Envoy named the rightmost X-Forwarded-For entry
    # as the client, so a new one per request was a fresh sign-in bucket (0 of 30 refused).
    # svc_session runs the production default here: 20 attempts per address, one more per 5 s.
    # A different email each time, so only the address bucket can refuse; from an address of
    # this test's own, so 127.0.0.1 (every other test) keeps its tokens.
    edge = envoy.endpoint("envoy", "public")
    replies = []
    with client_from(random_loopback()) as client:
        for attempt in range(30):
            email = f"guess-{secrets.token_hex(6)}@parley.test"
            login = session_pb2.LoginRequest(
                password=session_pb2.PasswordCredential(email=email, password="not the password")
            )
            spoofed = {"x-forwarded-for": f"198.51.{attempt}.{1 + secrets.randbelow(254)}"}
            replies.append(call(client, edge, "/parley.session.v1.SessionService/Login", login, spoofed))

    refused = [r for r in replies if r.code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert {r.code for r in replies} <= {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert replies[0].code == grpc.StatusCode.UNAUTHENTICATED
    assert refused, "30 wrong passwords from one address, none refused: the spoofed XFF picked the bucket"
    for reply in refused:
        info = reply.error_info()
        assert (info.reason, dict(info.metadata)) == ("RATE_LIMITED", {"bucket": "addr"})

"""AuthInterceptor on a real grpc.aio server (loopback): it fails closed and says nothing.

Whatever breaks behind it (the JWKS, Redis, a bug), the caller gets UNAVAILABLE with
RetryInfo and a message without addresses, the server logs one line without the token,
and every refusal is counted by reason in the server's own metrics registry.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from parley.session.v1 import session_pb2 as pb
from parley_core.auth import (
    USER_TOKEN_HEADER,
    AuthInterceptor,
    JwtVerifier,
    Principal,
    StaticKeySource,
    current_principal,
    require_service,
)
from parley_core.errors import RpcError, details_of
from parley_core.server import RunningServer, start_server
from parley_core.servicer import add_servicer
from parley_core.settings import ServiceSettings
from parley_core.stubs import session_stub

SERVICE = pb.DESCRIPTOR.services_by_name["SessionService"]
ISSUER, AUDIENCE = "https://session.parley.test", "parley"
KEY = ECKey.generate_key("P-256", parameters={"kid": "k1", "use": "sig", "alg": "ES256"})
PUBLIC = KeySet([ECKey.import_key(KEY.as_dict(private=False))])


def sign(**claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u1", "exp": now + 600, "iat": now, "scope": "account"}
    return jwt.encode({"alg": "ES256", "kid": "k1"}, {**body, **claims}, KEY, algorithms=["ES256"])


INTERNAL_AUDIENCE = "parley-internal"
WHO_AM_I = f"/{SERVICE.full_name}/GetCurrentUser"


class WhoAmI:
    """Answers with the caller's user name, and the service calling for it as display name."""

    async def GetCurrentUser(
        self, request: pb.GetCurrentUserRequest, context: Any
    ) -> pb.GetCurrentUserResponse:
        principal = current_principal()
        return pb.GetCurrentUserResponse(
            user=pb.User(name=principal.user_name, display_name=principal.service)
        )


def service_token(service: str = "svc_router", **claims: Any) -> str:
    body = {"aud": INTERNAL_AUDIENCE, "sub": f"services/{service}", "svc": service, "scope": "service"}
    return sign(**{**body, **claims})


class BrokenKeys:
    """A key source whose backend fails the way a real one does."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def key_set(self, *, refresh: bool) -> KeySet:
        raise self.error


class Server:
    def __init__(self, running: RunningServer, interceptor: AuthInterceptor) -> None:
        self.running, self.interceptor = running, interceptor

    def failures(self, reason: str) -> float:
        """The counter as the server's metrics endpoint serves it."""
        text = httpx.get(f"http://127.0.0.1:{self.running.metrics_port}/metrics").text
        line = f'parley_auth_failures_total{{reason="{reason}"}} '
        values = [float(row[len(line) :]) for row in text.splitlines() if row.startswith(line)]
        return values[0] if values else 0.0


async def _serve(keys: Any, *, internal: bool = False, on_behalf_leeway_s: int | None = None) -> Server:
    registry = CollectorRegistry()
    interceptor = AuthInterceptor(
        JwtVerifier(keys, ISSUER, AUDIENCE),
        public_methods=(),
        internal_methods={WHO_AM_I} if internal else (),
        service_verifier=JwtVerifier(keys, ISSUER, INTERNAL_AUDIENCE),
        on_behalf_verifier=None
        if on_behalf_leeway_s is None
        else JwtVerifier(keys, ISSUER, AUDIENCE, leeway_s=on_behalf_leeway_s),
        registry=registry,
    )

    async def register(server: grpc.aio.Server) -> list[str]:
        return [add_servicer(server, SERVICE, WhoAmI())]

    running = await start_server(
        ServiceSettings(metrics_port=0, shutdown_grace_s=0.5),
        register,
        interceptors=[interceptor],
        registry=registry,
    )
    return Server(running, interceptor)


@pytest.fixture
async def served() -> AsyncIterator[Server]:
    server = await _serve(StaticKeySource(PUBLIC))
    try:
        yield server
    finally:
        await server.running.stop()


@pytest.fixture
async def internal() -> AsyncIterator[Server]:
    """GetCurrentUser as an internal method."""
    server = await _serve(StaticKeySource(PUBLIC), internal=True)
    try:
        yield server
    finally:
        await server.running.stop()


async def _call(
    server: Server, token: str | None, user_token: str | None = None
) -> pb.GetCurrentUserResponse:
    metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
    if user_token:
        metadata += ((USER_TOKEN_HEADER, user_token),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.running.port}") as channel:
        return await session_stub(channel).GetCurrentUser(pb.GetCurrentUserRequest(), metadata=metadata)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError("Error 111 connecting to 10.9.8.7:6543. Connection refused."),
        TimeoutError("timed out talking to 10.9.8.7:6543"),
        KeyError("10.9.8.7:6543"),  # a bug
    ],
    ids=["connection", "timeout", "bug"],
)
async def test_a_failing_key_source_is_unavailable_with_retry_info_not_unknown(error: Exception) -> None:
    server = await _serve(BrokenKeys(error))
    token = sign()
    try:
        with capture_logs() as logs, pytest.raises(grpc.aio.AioRpcError) as failed:
            await _call(server, token)
        counted = server.failures("AUTH_BACKEND_UNAVAILABLE")
    finally:
        await server.running.stop()

    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    details = details_of(failed.value)
    info = next(d for d in details if isinstance(d, error_details_pb2.ErrorInfo))
    retry = next(d for d in details if isinstance(d, error_details_pb2.RetryInfo))
    assert info.reason == "AUTH_BACKEND_UNAVAILABLE"
    assert retry.retry_delay.seconds == 1
    message = failed.value.details() or ""
    assert "10.9.8.7" not in message
    assert "6543" not in message
    warnings = [entry for entry in logs if entry["event"] == "auth failed closed"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["error_type"] == type(error).__name__
    assert token not in repr(logs)
    assert counted == 1.0


async def test_a_valid_token_reaches_the_handler(served: Server) -> None:
    reply = await _call(served, sign(sub="ada"))

    assert reply.user.name == "users/ada"
    assert served.failures("INVALID_TOKEN") == 0.0


@pytest.mark.parametrize(
    ("token", "reason"),
    [(None, "UNAUTHENTICATED"), ("garbage", "INVALID_TOKEN"), (sign(aud="other"), "INVALID_TOKEN")],
    ids=["missing", "garbage", "audience"],
)
async def test_every_refusal_is_counted_by_reason(served: Server, token: str | None, reason: str) -> None:
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _call(served, token)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    assert served.failures(reason) == 2.0


def test_interceptors_without_a_registry_do_not_collide() -> None:
    verifier = JwtVerifier(StaticKeySource(PUBLIC), ISSUER, AUDIENCE)
    first = AuthInterceptor(verifier, public_methods=())
    second = AuthInterceptor(verifier, public_methods=())  # no "duplicated timeseries"

    first.failures.labels("INVALID_TOKEN").inc()

    assert second.failures.labels("INVALID_TOKEN")._value.get() == 0.0


async def test_a_service_calling_an_internal_method_for_a_user_is_seen_with_both(internal: Server) -> None:
    reply = await _call(internal, service_token("svc_router"), sign(sub="ada"))

    assert (reply.user.name, reply.user.display_name) == ("users/ada", "svc_router")


async def test_on_an_internal_method_a_user_s_own_token_names_no_service(internal: Server) -> None:
    reply = await _call(internal, sign(sub="ada", svc="svc_router"))  # a claim only a service token counts

    assert (reply.user.name, reply.user.display_name) == ("users/ada", "")


@pytest.mark.parametrize(
    "authorization",
    [
        sign(sub="mallory"),
        sign(aud=INTERNAL_AUDIENCE, sub="services/svc_router"),
        service_token(sub="users/x"),
    ],
    ids=["user-token", "no-svc-claim", "sub-not-the-service"],
)
async def test_for_a_user_only_a_real_service_token_is_accepted(internal: Server, authorization: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _call(internal, authorization, sign(sub="ada"))

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert internal.failures("INVALID_TOKEN") == 1.0


async def test_a_user_token_with_another_users_token_beside_it_is_refused_at_any_method(
    served: Server,
) -> None:
    # Only a service token may carry the user-token header; a user who adds one (to pass
    # for someone else) is refused rather than served as either user.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _call(served, sign(sub="ada"), sign(sub="bob"))

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert served.failures("INVALID_TOKEN") == 1.0


async def test_a_service_token_is_not_a_user_token(served: Server) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _call(served, service_token())

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert served.failures("INVALID_TOKEN") == 1.0


def test_require_service_admits_only_the_named_services() -> None:
    user = Principal("ada", "user", "free", frozenset())
    router = Principal("ada", "user", "free", frozenset(), service="svc_router")

    require_service(router, "svc_router", "svc_ledger")
    with pytest.raises(RpcError) as no_service:
        require_service(user, "svc_router")
    with pytest.raises(RpcError) as other_service:
        require_service(router, "svc_ledger")

    assert (no_service.value.code, no_service.value.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "SERVICE_ONLY",
    )
    assert other_service.value.reason == "SERVICE_ONLY"


def test_internal_methods_need_a_service_verifier() -> None:
    with pytest.raises(ValueError, match="service_verifier"):
        AuthInterceptor(
            JwtVerifier(StaticKeySource(PUBLIC), ISSUER, AUDIENCE), (), internal_methods={WHO_AM_I}
        )


async def test_a_service_may_carry_a_users_token_past_its_exp_within_the_on_behalf_leeway() -> None:
    # A chat turn stores its answer minutes after the user's token was checked.
    server = await _serve(StaticKeySource(PUBLIC), internal=True, on_behalf_leeway_s=900)
    expired = sign(sub="ada", exp=int(time.time()) - 300, iat=int(time.time()) - 1200)
    long_expired = sign(sub="ada", exp=int(time.time()) - 1000, iat=int(time.time()) - 2000)
    try:
        reply = await _call(server, service_token(), expired)
        with pytest.raises(grpc.aio.AioRpcError) as alone:
            await _call(server, expired)  # the user's own call: no such leeway
        with pytest.raises(grpc.aio.AioRpcError) as too_old:
            await _call(server, service_token(), long_expired)
    finally:
        await server.running.stop()

    assert (reply.user.name, reply.user.display_name) == ("users/ada", "svc_router")
    assert alone.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert too_old.value.code() == grpc.StatusCode.UNAUTHENTICATED

"""Revocations against the local stack's real Redis: what each write ends, how fast every
instance learns of it, and that nothing is let through when Redis cannot be asked.

Two instances on separate clients stand for two processes. Waits for another instance
are bounded polls (the change must land within a second), not timings.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
import redis.asyncio
from google.rpc import error_details_pb2
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from parley.session.v1 import session_pb2 as pb
from parley_core.auth import (
    AuthInterceptor,
    JwtVerifier,
    Principal,
    Revocations,
    StaticKeySource,
    UserState,
)
from parley_core.errors import RpcError, details_of
from parley_core.server import start_server
from parley_core.servicer import add_servicer
from parley_core.settings import ServiceSettings
from parley_core.stubs import session_stub
from parley_stack.testing import LocalStack
from tests.integration.core.tcp import CuttableProxy, SilentServer

pytestmark = pytest.mark.integration

#: Every key this run writes lives under its own prefix.
PREFIX = f"test:{secrets.token_hex(6)}:auth:"
#: Small enough that staleness tests finish quickly.
TIMING: dict[str, Any] = {"op_timeout_s": 0.5, "max_staleness_s": 1.0, "block_s": 0.2}
#: How long another instance may take to see a write (one stream delivery, in practice ms).
PROPAGATION_S = 1.0


def _principal(
    user_id: str | None = None, *, session_id: str | None = None, api_key_id: str = "", issued_at_ms: int = 0
) -> Principal:
    return Principal(
        user_id=user_id or f"u-{secrets.token_hex(4)}",
        role="user",
        tier="free",
        scopes=frozenset({"chat"}),
        session_id=session_id if session_id is not None else f"s-{secrets.token_hex(4)}",
        api_key_id=api_key_id,
        expires_at=int(time.time()) + 600,
        issued_at_ms=issued_at_ms or int(time.time() * 1000),
    )


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def redis_address(local_stack: LocalStack) -> tuple[str, int]:
    local_stack.ensure("redis")
    return local_stack.endpoint("redis", "redis")


Factory = Callable[..., Awaitable[Revocations]]


@pytest.fixture
async def revocations(redis_address: tuple[str, int]) -> AsyncIterator[Factory]:
    """Makes started instances, each on a client of its own (as separate processes are)."""
    made: list[tuple[Revocations, redis.asyncio.Redis]] = []

    async def make(
        *, port: int | None = None, start: bool = True, socket_timeout: float = 5, **options: Any
    ) -> Revocations:
        client = redis.asyncio.Redis(
            host=redis_address[0], port=port or redis_address[1], socket_timeout=socket_timeout
        )
        instance = Revocations(client, prefix=PREFIX, **{**TIMING, **options})
        made.append((instance, client))
        if start:
            await instance.start()
        return instance

    try:
        yield make
    finally:
        for instance, client in made:
            await instance.close()
            await client.aclose()


@pytest.fixture
async def client(redis_address: tuple[str, int]) -> AsyncIterator[redis.asyncio.Redis]:
    connection = redis.asyncio.Redis(host=redis_address[0], port=redis_address[1], decode_responses=True)
    try:
        yield connection
    finally:
        await connection.aclose()


async def _refusal(revocations: Revocations, principal: Principal) -> RpcError:
    with pytest.raises(RpcError) as refused:
        await revocations.check(principal)
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    return refused.value


async def _refused_within(revocations: Revocations, principal: Principal, seconds: float) -> RpcError:
    """The refusal once revocations refuses principal; fails if that takes longer than seconds."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            await revocations.check(principal)
        except RpcError as error:
            return error
        assert time.monotonic() < deadline, f"still accepted after {seconds} s"
        await asyncio.sleep(0.005)


async def _accepted_within(revocations: Revocations, principal: Principal, seconds: float) -> Principal:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await revocations.check(principal)
        except RpcError:
            assert time.monotonic() < deadline, f"still refused after {seconds} s"
            await asyncio.sleep(0.005)


def _assert_unavailable(error: RpcError, port: int) -> None:
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "AUTH_BACKEND_UNAVAILABLE")
    assert error.retry_after_s == 1.0
    assert str(port) not in error.message
    assert "127.0.0.1" not in error.message


async def test_a_principal_without_state_passes_unchanged(revocations: Factory) -> None:
    instance = await revocations()
    principal = _principal(api_key_id=f"k-{secrets.token_hex(4)}")

    assert await instance.check(principal) is principal
    assert await instance.check(principal) is principal  # from the local view


async def test_a_revoked_session_is_refused_at_once_by_the_writer_and_soon_by_others(
    revocations: Factory, client: redis.asyncio.Redis
) -> None:
    writer, other = await revocations(), await revocations()
    ended, still_open = _principal(), _principal()
    ended_elsewhere = _principal(ended.user_id, session_id=ended.session_id)
    for instance in (writer, other):
        await instance.check(ended)  # both have it in their local view, as not revoked
    assert other.is_current  # so only its follower can change its answer

    await writer.revoke_session(ended.session_id, ttl_s=900)
    at_once = await _refusal(writer, ended)
    soon = await _refused_within(other, ended_elsewhere, PROPAGATION_S)

    assert (at_once.reason, soon.reason) == ("SESSION_REVOKED", "SESSION_REVOKED")
    assert await other.check(still_open) is still_open
    assert await client.get(f"{PREFIX}session:{ended.session_id}") == "1"
    assert 890 <= await client.ttl(f"{PREFIX}session:{ended.session_id}") <= 900


async def test_a_revoked_api_key_ends_every_token_issued_from_it(revocations: Factory) -> None:
    writer, other = await revocations(), await revocations()
    key_id = f"k-{secrets.token_hex(4)}"
    first, second = _principal(api_key_id=key_id), _principal(api_key_id=key_id)
    same_user_signed_in = _principal(first.user_id)
    for principal in (first, second, same_user_signed_in):
        await other.check(principal)

    await writer.revoke_api_key(key_id, ttl_s=900)

    assert (await _refusal(writer, first)).reason == "API_KEY_REVOKED"
    assert (await _refused_within(other, first, PROPAGATION_S)).reason == "API_KEY_REVOKED"
    assert (await _refusal(other, second)).reason == "API_KEY_REVOKED"
    assert await other.check(same_user_signed_in) is same_user_signed_in


async def test_not_before_refuses_tokens_issued_earlier_and_no_others(revocations: Factory) -> None:
    writer, other = await revocations(), await revocations()
    user = f"u-{secrets.token_hex(4)}"
    cut_ms = int(time.time() * 1000)
    before, at_cut = _principal(user, issued_at_ms=cut_ms - 1), _principal(user, issued_at_ms=cut_ms)
    await other.check(before)

    await writer.publish_user(user, UserState("user", "free", disabled=False, not_before_ms=cut_ms))

    assert (await _refusal(writer, before)).reason == "TOKEN_REVOKED"
    assert (await _refused_within(other, before, PROPAGATION_S)).reason == "TOKEN_REVOKED"
    assert await writer.check(at_cut) == at_cut
    assert await other.check(at_cut) == at_cut


async def test_a_disabled_account_is_refused_until_enabled_again(revocations: Factory) -> None:
    writer, other = await revocations(), await revocations()
    principal = _principal()
    await other.check(principal)

    await writer.publish_user(principal.user_id, UserState("user", "free", disabled=True, not_before_ms=0))
    at_once = await _refusal(writer, principal)
    soon = await _refused_within(other, principal, PROPAGATION_S)
    await writer.publish_user(principal.user_id, UserState("user", "free", disabled=False, not_before_ms=0))

    assert (at_once.reason, soon.reason) == ("ACCOUNT_DISABLED", "ACCOUNT_DISABLED")
    assert await writer.check(principal) == principal
    assert await _accepted_within(other, principal, PROPAGATION_S) == principal


async def test_role_and_tier_come_from_the_user_state_on_the_next_call(revocations: Factory) -> None:
    writer, other = await revocations(), await revocations()
    principal = _principal()
    assert await other.check(principal) is principal

    await writer.publish_user(principal.user_id, UserState("admin", "pro", disabled=False, not_before_ms=0))
    promoted = await writer.check(principal)
    deadline = time.monotonic() + PROPAGATION_S
    while (seen := await other.check(principal)).role != "admin":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)

    assert (promoted.role, promoted.tier, promoted.is_admin) == ("admin", "pro", True)
    assert seen == promoted
    assert (promoted.user_id, promoted.session_id, promoted.scopes) == (
        principal.user_id,
        principal.session_id,
        principal.scopes,
    )


async def test_every_write_is_stored_as_documented_and_logged_in_the_stream(
    revocations: Factory, client: redis.asyncio.Redis
) -> None:
    writer = await revocations()
    user, session, key = (f"x-{secrets.token_hex(4)}" for _ in range(3))
    before: list[tuple[str, dict[str, str]]] = await client.xrevrange(f"{PREFIX}log", count=1)  # type: ignore[assignment]

    await writer.publish_user(user, UserState("admin", "pro", disabled=True, not_before_ms=1234))
    await writer.revoke_session(session, ttl_s=60)
    await writer.revoke_api_key(key, ttl_s=60)

    entries: list[tuple[str, dict[str, str]]] = await client.xrange(  # type: ignore[assignment]
        f"{PREFIX}log", min=f"({before[0][0]}" if before else "-"
    )
    assert [fields for _id, fields in entries] == [
        {"kind": "user", "id": user},
        {"kind": "session", "id": session},
        {"kind": "apikey", "id": key},
    ]
    assert await client.hgetall(f"{PREFIX}user:{user}") == {
        "role": "admin",
        "tier": "pro",
        "disabled": "1",
        "not_before_ms": "1234",
    }
    assert await client.ttl(f"{PREFIX}user:{user}") == -1
    assert await client.get(f"{PREFIX}apikey:{key}") == "1"


async def test_the_follower_keeps_within_the_client_s_socket_timeout(revocations: Factory) -> None:
    # A blocking read as long as the socket timeout would be cut off by it, every time.
    instance = await revocations(socket_timeout=0.3, block_s=0.9, max_staleness_s=2.0)
    lapses = 0
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        lapses += not instance.is_current
        await asyncio.sleep(0.01)

    assert lapses == 0


async def test_without_a_follower_every_check_reads_redis(revocations: Factory) -> None:
    writer, unstarted = await revocations(), await revocations(start=False)
    principal = _principal()
    await unstarted.check(principal)

    await writer.revoke_session(principal.session_id, ttl_s=60)

    assert not unstarted.is_current
    assert (await _refusal(unstarted, principal)).reason == "SESSION_REVOKED"  # no wait at all


async def test_an_unreachable_redis_fails_closed_for_reads_and_writes(revocations: Factory) -> None:
    port = _closed_port()
    instance = await revocations(port=port)  # start() does not raise

    with pytest.raises(RpcError) as read:
        await instance.check(_principal())
    with pytest.raises(RpcError) as write:
        await instance.revoke_session("s-1", ttl_s=60)

    assert not instance.is_current
    _assert_unavailable(read.value, port)
    _assert_unavailable(write.value, port)


async def test_a_redis_that_never_answers_times_out_and_fails_closed(revocations: Factory) -> None:
    silent = SilentServer()
    await silent.start()
    try:
        instance = await revocations(port=silent.port, op_timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(RpcError) as read:
            await instance.check(_principal())
        waited = time.monotonic() - started
    finally:
        await silent.close()

    _assert_unavailable(read.value, silent.port)
    assert waited < 1.0


async def test_the_follower_survives_losing_redis_and_resumes(
    revocations: Factory, redis_address: tuple[str, int]
) -> None:
    proxy = CuttableProxy(*redis_address)
    await proxy.start()
    try:
        writer, follower = await revocations(), await revocations(port=proxy.port)
        during, after = _principal(), _principal()
        assert await follower.check(during) is during

        proxy.cut()
        from_view = await follower.check(during)  # the local view is trusted a little longer
        deadline = time.monotonic() + 2 * TIMING["max_staleness_s"]
        while follower.is_current:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        with pytest.raises(RpcError) as closed:
            await follower.check(during)
        await writer.revoke_session(during.session_id, ttl_s=60)

        proxy.restore()
        deadline = time.monotonic() + 3.0
        while not follower.is_current:
            assert time.monotonic() < deadline, "the follower did not reconnect"
            await asyncio.sleep(0.02)
        missed = await _refusal(follower, during)  # the view was dropped, Redis has it
        assert await follower.check(after) is after
        await writer.revoke_session(after.session_id, ttl_s=60)
        followed = await _refused_within(follower, after, PROPAGATION_S)
        assert follower.is_current
    finally:
        await proxy.close()

    assert from_view is during
    _assert_unavailable(closed.value, proxy.port)
    assert (missed.reason, followed.reason) == ("SESSION_REVOKED", "SESSION_REVOKED")


ISSUER, AUDIENCE = "https://session.parley.test", "parley"


class WhoAmI:
    async def GetCurrentUser(
        self, request: pb.GetCurrentUserRequest, context: Any
    ) -> pb.GetCurrentUserResponse:
        return pb.GetCurrentUserResponse(user=pb.User(name="users/me"))


async def test_through_the_interceptor_an_unreachable_redis_is_unavailable_on_the_wire(
    revocations: Factory,
) -> None:
    port = _closed_port()
    key = ECKey.generate_key("P-256", parameters={"kid": "k1", "alg": "ES256"})
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u1", "sid": "s1", "exp": now + 600, "iat": now}
    token = jwt.encode({"alg": "ES256", "kid": "k1"}, claims, key, algorithms=["ES256"])
    keys = StaticKeySource(KeySet([ECKey.import_key(key.as_dict(private=False))]))
    verifier = JwtVerifier(keys, ISSUER, AUDIENCE, await revocations(port=port))

    async def register(server: grpc.aio.Server) -> list[str]:
        return [add_servicer(server, pb.DESCRIPTOR.services_by_name["SessionService"], WhoAmI())]

    running = await start_server(
        ServiceSettings(metrics_port=-1, shutdown_grace_s=0.5),
        register,
        interceptors=[AuthInterceptor(verifier, public_methods=())],
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await session_stub(channel).GetCurrentUser(
                    pb.GetCurrentUserRequest(), metadata=(("authorization", f"Bearer {token}"),)
                )
    finally:
        await running.stop()

    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    details = details_of(failed.value)
    assert [d.reason for d in details if isinstance(d, error_details_pb2.ErrorInfo)] == [
        "AUTH_BACKEND_UNAVAILABLE"
    ]
    assert any(isinstance(d, error_details_pb2.RetryInfo) for d in details)
    assert str(port) not in (failed.value.details() or "")

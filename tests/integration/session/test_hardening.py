"""Findings of the security review, each closed: no master password, secrets at rest,
enumeration by reset requests, refresh retries, lockout by strangers, and failures that
fail closed without saying where the backends are."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2

from parley.session.v1 import session_pb2 as pb
from parley_core.cassandra import execute
from parley_core.errors import details_of
from parley_core.stubs import session_stub
from parley_stack.testing import LocalStack
from svc_session.app import SessionApp
from svc_session.keys import KeyEncryptionKey, KeyRing, KeyRingError
from svc_session.mailbox import DevMailbox, MailRelay
from svc_session.model import User, digest, now
from svc_session.settings import BucketSize, SessionSettings
from tests.integration.session.conftest import REFRESH_GRACE_S, session_settings
from tests.integration.session.helpers import (
    PASSWORD,
    RESET_SUBJECT,
    VERIFY_SUBJECT,
    bearer,
    failure,
    read_mail,
    reason,
    register_verified,
    retry_delay_s,
    token_from,
    wait_for_mail,
)
from tests.integration.tcp_proxy import TcpProxy

if TYPE_CHECKING:
    from parley.session.v1.session_pb2_grpc import SessionServiceAsyncStub

pytestmark = pytest.mark.integration

#: The old code's decoy password, which signed in any account stored without a hash.
OLD_DECOY = "parley-decoy-password"


def _login(email: str, password: str = PASSWORD) -> pb.LoginRequest:
    return pb.LoginRequest(password=pb.PasswordCredential(email=email, password=password))


# No master password ---------------------------------------------------------------------


async def test_an_account_without_a_password_hash_never_signs_in(
    stub: SessionServiceAsyncStub, email: str, session_app: SessionApp
) -> None:
    moment = now()
    user = User(str(uuid.uuid4()), email, "Imported", "", "user", "free", False, moment, moment, 1, True)
    await session_app.stores.users.insert(user)
    assert await session_app.stores.users.claim_email(email, user.user_id)

    for guess in (OLD_DECOY, "any long password at all"):
        error = await failure(stub.Login(_login(email, guess)))
        assert reason(error) == "INVALID_CREDENTIALS"


# Secrets at rest ---------------------------------------------------------------------------


async def test_used_proofs_and_refresh_tokens_expire_with_their_lifetime(
    stub: SessionServiceAsyncStub, email: str, mailbox: Path, session_app: SessionApp
) -> None:
    registered = await stub.Register(pb.RegisterRequest(email=email, password=PASSWORD, display_name="Ada"))
    [mail] = await wait_for_mail(mailbox, email, VERIFY_SUBJECT)
    token = token_from(mail, "Verification token")
    await stub.VerifyEmail(pb.VerifyEmailRequest(verification_token=token))
    await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=registered.credentials.refresh_token))

    proof_ttl = await session_app.stores.proofs.used_ttl(digest(token))
    [refresh] = await execute(
        session_app.cql,
        f"SELECT TTL(used) AS ttl FROM {session_app.settings.keyspace}.refresh_tokens WHERE token_hash = %s",
        (digest(registered.credentials.refresh_token),),
    )

    assert proof_ttl is not None
    assert 0 < proof_ttl <= session_app.settings.email_verification_ttl_s
    assert refresh.ttl is not None
    assert 0 < refresh.ttl <= session_app.settings.refresh_token_ttl_s + 1


async def test_proof_tokens_are_stored_only_as_digests_and_the_outbox_holds_none(
    stub: SessionServiceAsyncStub, email: str, mailbox: Path, session_app: SessionApp
) -> None:
    await stub.Register(pb.RegisterRequest(email=email, password=PASSWORD, display_name="Ada"))
    await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email=email))
    tokens = [
        token_from((await wait_for_mail(mailbox, email, VERIFY_SUBJECT))[0], "Verification token"),
        token_from((await wait_for_mail(mailbox, email, RESET_SUBJECT))[0], "Reset token"),
    ]
    keyspace = session_app.settings.keyspace

    proofs = await execute(session_app.cql, f"SELECT * FROM {keyspace}.email_proofs")
    outbox = await execute(session_app.cql, f"SELECT * FROM {keyspace}.mail_outbox")
    stored = json.dumps([[str(value) for value in row] for row in [*proofs, *outbox]])

    for token in tokens:
        assert token not in stored
        assert digest(token) in {row.token_hash for row in proofs}


async def test_signing_keys_are_wrapped_by_the_key_encryption_key(session_app: SessionApp) -> None:
    keyspace = session_app.settings.keyspace
    rows = await execute(session_app.cql, f"SELECT kid, wrapped_key FROM {keyspace}.signing_key_ring")
    settings = session_app.settings

    assert rows
    for row in rows:
        assert b'"d"' not in row.wrapped_key  # no private JWK member in the clear
        assert row.kid.encode() not in row.wrapped_key
    stranger = KeyRing(
        session_app.stores.keys, KeyEncryptionKey(KeyEncryptionKey.generate()), settings.key_rotation_s, 900
    )
    with pytest.raises(KeyRingError, match="another key-encryption key"):
        await stranger.load()
    with pytest.raises(ValueError, match="KEY_ENCRYPTION_KEY"):
        await SessionApp.start(settings.model_copy(update={"key_encryption_key": None}))


# Enumeration ------------------------------------------------------------------------------


@pytest.fixture
async def relayless_app(session_servers: LocalStack, tmp_path: Path) -> AsyncIterator[SessionApp]:
    """svc_session on a keyspace of its own, with no mail relay running."""
    app = await SessionApp.start(session_settings(session_servers, tmp_path, dev_mailbox_dir=None))
    try:
        yield app
    finally:
        await app.stop()


async def test_a_reset_request_does_the_same_work_for_known_and_unknown_addresses(
    relayless_app: SessionApp, email: str, tmp_path: Path
) -> None:
    app = relayless_app
    unknown = "nobody-" + email
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = session_stub(channel)
        await stub.Register(pb.RegisterRequest(email=email, password=PASSWORD, display_name="Ada"))
        known_reply = await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email=email))
        unknown_reply = await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email=unknown))

    assert known_reply == unknown_reply
    resets = [i for i in await app.stores.proofs.pending() if i.kind == "password_reset"]
    # One intent each, alike but for the address; no token was made in the request.
    assert sorted((i.recipient, i.user_id, i.lease_until) for i in resets) == [
        (unknown, "", None),
        (email, "", None),
    ]
    assert await execute(app.cql, f"SELECT * FROM {app.settings.keyspace}.email_proofs") == []
    # The relay does the mail work: the owner gets a reset mail, nobody else anything.
    relay = MailRelay(app.domain.proofs, app.stores.proofs, DevMailbox(tmp_path), poll_s=60)
    assert await relay.deliver_pending() == 2  # the verification mail and the reset
    assert [m["subject"] for m in read_mail(tmp_path, email, RESET_SUBJECT)] == [RESET_SUBJECT]
    assert read_mail(tmp_path, unknown) == []
    assert await app.stores.proofs.pending() == []


# Refresh retries -------------------------------------------------------------------------


async def test_concurrent_refreshes_of_one_token_get_the_same_new_pair(
    stub: SessionServiceAsyncStub, email: str
) -> None:
    first = (
        await stub.Register(pb.RegisterRequest(email=email, password=PASSWORD, display_name="A"))
    ).credentials
    request = pb.RefreshTokenRequest(refresh_token=first.refresh_token)

    replies = await asyncio.gather(*(stub.RefreshToken(request) for _ in range(4)))
    retried = await stub.RefreshToken(request)  # a retry after a timeout, still in the window

    pairs = {(r.credentials.access_token, r.credentials.refresh_token) for r in [*replies, retried]}
    assert len(pairs) == 1
    [(access, refresh)] = pairs
    # The session lives on: the pair works and rotates as usual.
    await stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(access))
    assert (await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=refresh))).credentials.refresh_token


async def test_a_reuse_after_the_grace_window_still_revokes_the_family(
    stub: SessionServiceAsyncStub, email: str
) -> None:
    first = (
        await stub.Register(pb.RegisterRequest(email=email, password=PASSWORD, display_name="A"))
    ).credentials
    second = (await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=first.refresh_token))).credentials

    await asyncio.sleep(REFRESH_GRACE_S + 0.3)
    reused = await failure(stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=first.refresh_token)))

    assert reason(reused) == "REFRESH_TOKEN_REUSED"
    revoked = await failure(
        stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(second.access_token))
    )
    assert reason(revoked) == "SESSION_REVOKED"


# No lockout by strangers -----------------------------------------------------------------


@pytest.fixture
async def edge_stub(
    session_app: SessionApp, session_servers: LocalStack, mailbox: Path
) -> AsyncIterator[SessionServiceAsyncStub]:
    """svc_session behind a trusted edge (127.0.0.1) naming clients, with production
    sign-in buckets except a smaller loose per-email one."""
    defaults = SessionSettings.model_fields
    settings = session_settings(
        session_servers,
        mailbox,
        keyspace=session_app.settings.keyspace,
        trusted_proxies=["127.0.0.1"],
        auth_address_bucket=defaults["auth_address_bucket"].default,
        auth_email_address_bucket=defaults["auth_email_address_bucket"].default,
        auth_email_bucket=BucketSize(capacity=8, refill_per_s=1 / 3600),
    )
    app = await SessionApp.start(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield session_stub(channel)
    finally:
        await app.stop()


def _from(address: str) -> tuple[tuple[str, str], ...]:
    return (("x-parley-client-address", address),)


async def _guess_until_refused(
    stub: SessionServiceAsyncStub, email: str, address: str
) -> grpc.aio.AioRpcError:
    for attempt in range(20):
        error = await failure(stub.Login(_login(email, f"wrong guess {attempt}!"), metadata=_from(address)))
        if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return error
        assert reason(error) == "INVALID_CREDENTIALS"
    raise AssertionError("never throttled")


async def test_a_stranger_cannot_lock_the_owner_out_of_sign_in_or_reset(
    edge_stub: SessionServiceAsyncStub, email: str, mailbox: Path
) -> None:
    await edge_stub.Register(pb.RegisterRequest(email=email, password=PASSWORD, display_name="A"))

    throttled = await _guess_until_refused(edge_stub, email, "203.0.113.9")

    [info] = [d for d in details_of(throttled) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert info.metadata["bucket"] == "email_addr"
    assert retry_delay_s(throttled)
    # The owner, elsewhere, signs in and asks for a reset as if nothing happened.
    signed_in = await edge_stub.Login(_login(email), metadata=_from("198.51.100.20"))
    assert signed_in.user.email == email
    await edge_stub.RequestPasswordReset(
        pb.RequestPasswordResetRequest(email=email), metadata=_from("198.51.100.20")
    )


async def test_the_loose_per_email_bucket_stops_guessing_from_many_addresses(
    edge_stub: SessionServiceAsyncStub, email: str
) -> None:
    await edge_stub.Register(pb.RegisterRequest(email=email, password=PASSWORD, display_name="A"))
    refusals = [await _guess_until_refused(edge_stub, email, f"203.0.113.{n}") for n in (20, 21)]

    third = await failure(edge_stub.Login(_login(email, "yet another guess"), metadata=_from("203.0.113.22")))

    assert [reason(e) for e in refusals] == ["RATE_LIMITED", "RATE_LIMITED"]
    assert third.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    [info] = [d for d in details_of(third) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert info.metadata["bucket"] == "email"


# Failing closed -------------------------------------------------------------------------


def _says_nothing_of_where(error: grpc.aio.AioRpcError, port: int) -> None:
    assert "127.0.0.1" not in (error.details() or "")
    assert str(port) not in (error.details() or "")
    assert error.debug_error_string() is not None


async def _until_unavailable(call: object, deadline_s: float = 15) -> grpc.aio.AioRpcError:
    """Repeat call() until it fails with UNAVAILABLE (a local view may stay fresh briefly)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            await call()  # type: ignore[operator]
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                return error
        assert time.monotonic() < deadline, "the call kept succeeding"
        await asyncio.sleep(0.2)


async def test_redis_gone_during_token_checks_is_unavailable_with_retry_info(
    session_servers: LocalStack, mailbox: Path
) -> None:
    redis_host, redis_port = session_servers.endpoint("redis", "redis")
    proxy = TcpProxy(redis_host, redis_port)
    port = await proxy.start()
    app = await SessionApp.start(
        session_settings(session_servers, mailbox, redis_url=f"redis://127.0.0.1:{port}/0")
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = session_stub(channel)
            email = f"redis-{uuid.uuid4().hex[:8]}@parley.test"
            token = (await register_verified(stub, mailbox, email)).credentials.access_token

            await proxy.cut()
            checked = await _until_unavailable(
                lambda: stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(token), timeout=10)
            )
            signing_in = await failure(stub.Login(_login(email), timeout=10))
    finally:
        await proxy.cut()
        await app.stop()

    for error in (checked, signing_in):
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert retry_delay_s(error)
        _says_nothing_of_where(error, port)
    assert reason(checked) == "AUTH_BACKEND_UNAVAILABLE"


async def test_cassandra_gone_during_a_refresh_is_unavailable_with_retry_info(
    session_servers: LocalStack, mailbox: Path
) -> None:
    cql_host, cql_port = session_servers.endpoint("cassandra-1", "cql")
    proxy = TcpProxy(cql_host, cql_port)
    port = await proxy.start()
    app = await SessionApp.start(session_settings(session_servers, mailbox, cassandra_port=port))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = session_stub(channel)
            registered = await stub.Register(
                pb.RegisterRequest(
                    email=f"cql-{uuid.uuid4().hex[:8]}@parley.test", password=PASSWORD, display_name="A"
                )
            )

            await proxy.cut()
            refused = await failure(
                stub.RefreshToken(
                    pb.RefreshTokenRequest(refresh_token=registered.credentials.refresh_token), timeout=30
                )
            )
    finally:
        await proxy.cut()
        await app.stop()

    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert retry_delay_s(refused)
    _says_nothing_of_where(refused, port)

"""Verified email: the link at sign-up, what an unverified account cannot do, its expiry,
the reset that proves the address, and admins granted out of band."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from parley.session.v1 import session_pb2 as pb
from parley_core.errors import RpcError
from parley_core.stubs import session_stub
from parley_stack.testing import LocalStack
from svc_session.app import SessionApp
from svc_session.settings import SessionSettings
from tests.integration.session.conftest import session_settings
from tests.integration.session.helpers import (
    PASSWORD,
    RESET_SUBJECT,
    VERIFY_SUBJECT,
    bearer,
    failure,
    field_violations,
    reason,
    register_verified,
    reset_token_from,
    token_from,
    verify_email,
    wait_for_mail,
)

if TYPE_CHECKING:
    from parley.session.v1.session_pb2_grpc import SessionServiceAsyncStub

pytestmark = pytest.mark.integration


async def _register(stub: SessionServiceAsyncStub, email: str) -> pb.RegisterResponse:
    return await stub.Register(pb.RegisterRequest(email=email, password=PASSWORD, display_name="Ada"))


async def _login(stub: SessionServiceAsyncStub, email: str, password: str = PASSWORD) -> pb.LoginResponse:
    return await stub.Login(pb.LoginRequest(password=pb.PasswordCredential(email=email, password=password)))


async def test_a_new_account_is_unverified_until_the_mailed_link_is_used_once(
    stub: SessionServiceAsyncStub, email: str, mailbox: Path
) -> None:
    registered = await _register(stub, email)
    assert registered.user.email_verified is False
    [mail] = await wait_for_mail(mailbox, email, VERIFY_SUBJECT)
    token = token_from(mail, "Verification token")
    assert f"/verify-email?token={token}" in mail["body"]

    verified = await stub.VerifyEmail(pb.VerifyEmailRequest(verification_token=token))
    again = await failure(stub.VerifyEmail(pb.VerifyEmailRequest(verification_token=token)))

    assert verified.user.email_verified is True
    assert again.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(again) == "INVALID_VERIFICATION_TOKEN"
    me = await stub.GetCurrentUser(
        pb.GetCurrentUserRequest(), metadata=bearer(registered.credentials.access_token)
    )
    assert me.user.email_verified is True


async def test_a_verification_token_is_not_a_reset_token_and_garbage_is_refused(
    stub: SessionServiceAsyncStub, email: str, mailbox: Path
) -> None:
    await _register(stub, email)
    [mail] = await wait_for_mail(mailbox, email, VERIFY_SUBJECT)
    token = token_from(mail, "Verification token")

    as_reset = await failure(
        stub.ResetPassword(pb.ResetPasswordRequest(reset_token=token, new_password="x" * 20))
    )
    empty = await failure(stub.VerifyEmail(pb.VerifyEmailRequest(verification_token="")))
    forged = await failure(stub.VerifyEmail(pb.VerifyEmailRequest(verification_token="A" * 43)))

    assert reason(as_reset) == "INVALID_RESET_TOKEN"
    assert field_violations(empty) == {"verification_token": "must not be empty"}
    assert reason(forged) == "INVALID_VERIFICATION_TOKEN"
    # The real token still works: the refusals used nothing.
    assert (await stub.VerifyEmail(pb.VerifyEmailRequest(verification_token=token))).user.email_verified


async def test_an_unverified_account_holds_no_api_keys(stub: SessionServiceAsyncStub, email: str) -> None:
    auth = bearer((await _register(stub, email)).credentials.access_token)

    error = await failure(
        stub.CreateApiKey(
            pb.CreateApiKeyRequest(parent="users/me", api_key=pb.ApiKey(display_name="k", scopes=["chat"])),
            metadata=auth,
        )
    )

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(error) == "EMAIL_NOT_VERIFIED"
    listed = await stub.ListApiKeys(
        pb.ListApiKeysRequest(parent="users/me", show_revoked=True), metadata=auth
    )
    assert list(listed.api_keys) == []


async def test_an_unverified_account_cannot_be_made_admin(
    stub: SessionServiceAsyncStub, email: str, admin_token: str, session_app: SessionApp
) -> None:
    target = await _register(stub, email)

    error = await failure(
        stub.UpdateUser(
            pb.UpdateUserRequest(
                user=pb.User(name=target.user.name, role=pb.ROLE_ADMIN), update_mask=FieldMask(paths=["role"])
            ),
            metadata=bearer(admin_token),
        )
    )
    with pytest.raises(RpcError) as out_of_band:
        await session_app.accounts.grant_admin(email)

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(error) == "EMAIL_NOT_VERIFIED"
    assert out_of_band.value.reason == "EMAIL_NOT_VERIFIED"
    me = await stub.GetCurrentUser(
        pb.GetCurrentUserRequest(), metadata=bearer(target.credentials.access_token)
    )
    assert me.user.role == pb.ROLE_USER


def _environment(settings: SessionSettings) -> dict[str, str]:
    """The PARLEY_SESSION_* variables that point `python -m svc_session` at settings' data."""
    assert settings.key_encryption_key is not None
    return {
        **os.environ,
        "PARLEY_SESSION_CASSANDRA_HOSTS": f'["{settings.cassandra_hosts[0]}"]',
        "PARLEY_SESSION_CASSANDRA_PORT": str(settings.cassandra_port),
        "PARLEY_SESSION_KEYSPACE": settings.keyspace,
        "PARLEY_SESSION_REDIS_URL": settings.redis_url,
        "PARLEY_SESSION_KEY_ENCRYPTION_KEY": settings.key_encryption_key.get_secret_value(),
    }


async def _grant(settings: SessionSettings, email: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "svc_session", "admin", "grant", email,
        env=_environment(settings), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def test_admins_are_granted_out_of_band_and_the_role_applies_to_the_next_call(
    stub: SessionServiceAsyncStub, email: str, mailbox: Path, session_app: SessionApp
) -> None:
    registered = await register_verified(stub, mailbox, email)
    auth = bearer(registered.credentials.access_token)  # issued while a plain user
    assert reason(await failure(stub.ListUsers(pb.ListUsersRequest(), metadata=auth))) == "ADMIN_ONLY"

    status, output = await _grant(session_app.settings, email)

    assert status == 0, output
    assert "is now an admin" in output
    # The same token, issued before the grant, now carries the admin role.
    listed = await stub.ListUsers(pb.ListUsersRequest(email_prefix=email), metadata=auth)
    assert [u.email for u in listed.users] == [email]
    assert listed.users[0].role == pb.ROLE_ADMIN


async def test_the_grant_command_refuses_an_unknown_or_unverified_address(
    stub: SessionServiceAsyncStub, email: str, session_app: SessionApp
) -> None:
    await _register(stub, email)

    unverified = await _grant(session_app.settings, email)
    unknown = await _grant(session_app.settings, "nobody-" + email)

    assert unverified[0] == 1
    assert "verified" in unverified[1]
    assert unknown[0] == 1


async def test_a_reset_proves_the_address_and_the_squatter_keeps_nothing(
    stub: SessionServiceAsyncStub, email: str, mailbox: Path
) -> None:
    # Someone signs up with an address that is not theirs; they cannot verify it.
    squatter = (await _register(stub, email)).credentials
    # The owner asks for a reset, and the mail reaches the owner.
    await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email=email))
    [mail] = await wait_for_mail(mailbox, email, RESET_SUBJECT)
    owners_password = "the owner's own passphrase"

    await stub.ResetPassword(
        pb.ResetPasswordRequest(reset_token=reset_token_from(mail), new_password=owners_password)
    )

    kept = await failure(
        stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(squatter.access_token))
    )
    assert reason(kept) == "TOKEN_REVOKED"
    refreshed = await failure(stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=squatter.refresh_token)))
    assert reason(refreshed) == "SESSION_ENDED"
    assert reason(await failure(_login(stub, email))) == "INVALID_CREDENTIALS"
    owner = await _login(stub, email, owners_password)
    assert owner.user.email_verified is True


async def test_a_reset_ends_api_keys_and_the_tokens_issued_from_them(
    stub: SessionServiceAsyncStub, email: str, mailbox: Path
) -> None:
    auth = bearer((await register_verified(stub, mailbox, email)).credentials.access_token)
    created = await stub.CreateApiKey(
        pb.CreateApiKeyRequest(parent="users/me", api_key=pb.ApiKey(display_name="k", scopes=["chat"])),
        metadata=auth,
    )
    key_token = (await stub.Login(pb.LoginRequest(api_key=created.key))).credentials.access_token
    await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email=email))
    [mail] = await wait_for_mail(mailbox, email, RESET_SUBJECT)

    await stub.ResetPassword(
        pb.ResetPasswordRequest(reset_token=reset_token_from(mail), new_password="n" * 20)
    )

    cut = await failure(stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(key_token)))
    assert cut.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason(cut) in {"TOKEN_REVOKED", "API_KEY_REVOKED"}
    assert reason(await failure(stub.Login(pb.LoginRequest(api_key=created.key)))) == "INVALID_API_KEY"
    fresh = bearer((await _login(stub, email, "n" * 20)).credentials.access_token)
    keys = await stub.ListApiKeys(pb.ListApiKeysRequest(parent="users/me", show_revoked=True), metadata=fresh)
    assert [k.HasField("revoke_time") for k in keys.api_keys] == [True]


@pytest.fixture
async def short_lived_stub(
    session_servers: LocalStack, mailbox: Path
) -> AsyncIterator[SessionServiceAsyncStub]:
    """svc_session whose unverified accounts live four seconds."""
    app = await SessionApp.start(
        session_settings(session_servers, mailbox, unverified_account_days=4 / 86400)
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield session_stub(channel)
    finally:
        await app.stop()


async def test_an_unverified_account_expires_and_frees_its_email(
    short_lived_stub: SessionServiceAsyncStub, email: str, mailbox: Path
) -> None:
    stub = short_lived_stub
    first = await _register(stub, email)
    verified_email = "verified-" + email
    await _register(stub, verified_email)
    await verify_email(stub, mailbox, verified_email)

    await asyncio.sleep(5)

    assert reason(await failure(_login(stub, email))) == "INVALID_CREDENTIALS"
    second = await _register(stub, email)  # the address is free again
    assert second.user.name != first.user.name
    assert (await _login(stub, verified_email)).user.email_verified is True  # verified ones stay

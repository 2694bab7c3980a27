"""Admin methods, brute-force throttling, and what the logs never hold."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from parley.session.v1 import session_pb2 as pb
from parley_core.logging import configure_logging
from parley_core.stubs import session_stub
from parley_stack.testing import LocalStack
from svc_session.app import SessionApp
from svc_session.settings import SessionSettings
from tests.integration.session.conftest import session_settings
from tests.integration.session.helpers import (
    PASSWORD,
    RESET_SUBJECT,
    bearer,
    failure,
    field_violations,
    reason,
    register_verified,
    reset_token_from,
    retry_delay_s,
    wait_for_mail,
)

if TYPE_CHECKING:
    from parley.session.v1.session_pb2_grpc import SessionServiceAsyncStub

pytestmark = pytest.mark.integration


async def test_non_admin_gets_permission_denied_on_admin_methods(
    stub: SessionServiceAsyncStub, email: str
) -> None:
    registered = await stub.Register(pb.RegisterRequest(email=email, password=PASSWORD, display_name="Ada"))
    auth = bearer(registered.credentials.access_token)
    promote = pb.UpdateUserRequest(
        user=pb.User(name=registered.user.name, role=pb.ROLE_ADMIN), update_mask=FieldMask(paths=["role"])
    )

    for call in (
        stub.ListUsers(pb.ListUsersRequest(), metadata=auth),
        stub.UpdateUser(promote, metadata=auth),
    ):
        error = await failure(call)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason(error) == "ADMIN_ONLY"
    me = await stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=auth)
    assert me.user.role == pb.ROLE_USER


async def test_admin_lists_users_and_changes_tier_role_and_disabled(
    stub: SessionServiceAsyncStub, email: str, admin_token: str
) -> None:
    admin = bearer(admin_token)
    target = await stub.Register(pb.RegisterRequest(email=email, password=PASSWORD, display_name="Ada"))
    found = await stub.ListUsers(pb.ListUsersRequest(email_prefix=email[:12]), metadata=admin)
    assert [u.email for u in found.users] == [email]

    upgraded = await stub.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(name=target.user.name, tier="pro", etag=target.user.etag),
            update_mask=FieldMask(paths=["tier"]),
        ),
        metadata=admin,
    )
    assert upgraded.user.tier == "pro"
    stale = await failure(
        stub.UpdateUser(
            pb.UpdateUserRequest(
                user=pb.User(name=target.user.name, tier="free", etag=target.user.etag),
                update_mask=FieldMask(paths=["tier"]),
            ),
            metadata=admin,
        )
    )
    assert stale.code() == grpc.StatusCode.ABORTED

    await stub.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(name=target.user.name, disabled=True), update_mask=FieldMask(paths=["disabled"])
        ),
        metadata=admin,
    )
    cut_off = await failure(
        stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(target.credentials.access_token))
    )
    assert reason(cut_off) == "ACCOUNT_DISABLED"
    login = await failure(
        stub.Login(pb.LoginRequest(password=pb.PasswordCredential(email=email, password=PASSWORD)))
    )
    assert reason(login) == "INVALID_CREDENTIALS"


async def test_update_user_rejects_unknown_fields_and_tiers(
    stub: SessionServiceAsyncStub, email: str, admin_token: str
) -> None:
    admin = bearer(admin_token)
    target = await stub.Register(pb.RegisterRequest(email=email, password=PASSWORD, display_name="Ada"))

    error = await failure(
        stub.UpdateUser(
            pb.UpdateUserRequest(
                user=pb.User(name=target.user.name, tier="platinum"),
                update_mask=FieldMask(paths=["tier", "email"]),
            ),
            metadata=admin,
        )
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"update_mask", "user.tier"}
    unchanged = await stub.GetCurrentUser(
        pb.GetCurrentUserRequest(), metadata=bearer(target.credentials.access_token)
    )
    assert unchanged.user.tier == "free"


@pytest.fixture
async def default_limits_stub(
    session_app: SessionApp, session_servers: LocalStack, mailbox: Path
) -> AsyncIterator[SessionServiceAsyncStub]:
    """A second svc_session on the same data, with the production default buckets."""
    defaults = SessionSettings.model_fields
    settings = session_settings(
        session_servers,
        mailbox,
        keyspace=session_app.settings.keyspace,
        auth_address_bucket=defaults["auth_address_bucket"].default,
        auth_email_address_bucket=defaults["auth_email_address_bucket"].default,
        auth_email_bucket=defaults["auth_email_bucket"].default,
    )
    app = await SessionApp.start(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield session_stub(channel)
    finally:
        await app.stop()


async def test_password_guessing_is_throttled_with_retry_info(
    default_limits_stub: SessionServiceAsyncStub, email: str
) -> None:
    stub = default_limits_stub
    await stub.Register(pb.RegisterRequest(email=email, password=PASSWORD, display_name="Ada"))
    codes: list[grpc.StatusCode] = []
    throttled: grpc.aio.AioRpcError | None = None
    for attempt in range(10):
        guess = pb.LoginRequest(
            password=pb.PasswordCredential(email=email, password=f"guess number {attempt}!")
        )
        error = await failure(stub.Login(guess))
        codes.append(error.code())
        if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            throttled = error
            break

    assert throttled is not None, codes
    assert codes[:-1] == [grpc.StatusCode.UNAUTHENTICATED] * (len(codes) - 1)
    assert reason(throttled) == "RATE_LIMITED"
    delay = retry_delay_s(throttled)
    assert delay is not None
    assert delay > 0
    # Even the right password waits now: the bucket belongs to the email, not the guess.
    right = await failure(
        stub.Login(pb.LoginRequest(password=pb.PasswordCredential(email=email, password=PASSWORD)))
    )
    assert right.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_logs_never_contain_passwords_tokens_or_keys(
    stub: SessionServiceAsyncStub, email: str, mailbox: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", "debug")
    registered = await register_verified(stub, mailbox, email)
    auth = bearer(registered.credentials.access_token)
    refreshed = await stub.RefreshToken(
        pb.RefreshTokenRequest(refresh_token=registered.credentials.refresh_token)
    )
    key = await stub.CreateApiKey(
        pb.CreateApiKeyRequest(parent="users/me", api_key=pb.ApiKey(display_name="k", scopes=["chat"])),
        metadata=auth,
    )
    await stub.Login(pb.LoginRequest(api_key=key.key))
    await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email=email))
    reset = reset_token_from((await wait_for_mail(mailbox, email, RESET_SUBJECT))[-1])
    new_password = "another long passphrase"
    await stub.ResetPassword(pb.ResetPasswordRequest(reset_token=reset, new_password=new_password))
    await failure(
        stub.Login(pb.LoginRequest(password=pb.PasswordCredential(email=email, password="wrong guess here")))
    )

    output = capfd.readouterr()
    logs = output.out + output.err
    lines = [json.loads(line) for line in output.out.splitlines() if line.startswith("{")]
    assert any(line.get("event") == "rpc" for line in lines), "the RPCs were logged"
    secrets = [
        PASSWORD,
        new_password,
        "wrong guess here",
        registered.credentials.access_token,
        registered.credentials.refresh_token,
        refreshed.credentials.refresh_token,
        key.key,
        reset,
    ]
    for secret in secrets:
        assert secret not in logs

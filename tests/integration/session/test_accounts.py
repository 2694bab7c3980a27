"""svc_session's account lifecycle on real Cassandra and Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from parley.session.v1 import session_pb2 as pb
from svc_session.app import SessionApp
from tests.integration.session.conftest import REFRESH_GRACE_S
from tests.integration.session.helpers import (
    PASSWORD,
    RESET_SUBJECT,
    bearer,
    failure,
    field_violations,
    outbox_drained,
    read_mail,
    reason,
    register_verified,
    reset_token_from,
    wait_for_mail,
)

if TYPE_CHECKING:
    from parley.session.v1.session_pb2_grpc import SessionServiceAsyncStub

pytestmark = pytest.mark.integration


async def _register(
    stub: SessionServiceAsyncStub, email: str, password: str = PASSWORD
) -> pb.RegisterResponse:
    return await stub.Register(pb.RegisterRequest(email=email, password=password, display_name="Ada"))


async def _login(stub: SessionServiceAsyncStub, email: str, password: str = PASSWORD) -> pb.LoginResponse:
    return await stub.Login(pb.LoginRequest(password=pb.PasswordCredential(email=email, password=password)))


async def test_register_normalises_the_email_and_signs_in(stub: SessionServiceAsyncStub, email: str) -> None:
    registered = await _register(stub, f"  {email.upper()} ")

    assert registered.user.email == email
    assert registered.user.role == pb.ROLE_USER
    assert registered.user.tier == "free"
    assert registered.credentials.refresh_token
    me = await stub.GetCurrentUser(
        pb.GetCurrentUserRequest(), metadata=bearer(registered.credentials.access_token)
    )
    assert me.user == registered.user


async def test_bad_registration_names_each_field_and_creates_nothing(
    stub: SessionServiceAsyncStub, email: str
) -> None:
    error = await failure(
        stub.Register(pb.RegisterRequest(email="not-an-email", password="short", display_name=""))
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"email", "password", "display_name"}
    short = await failure(_register(stub, email, password="too short"))
    assert field_violations(short) == {"password": "must be at least 12 characters"}
    # Nothing was claimed: the email still registers.
    assert (await _register(stub, email)).user.email == email


async def test_twenty_concurrent_registrations_of_one_email_create_one_account(
    stub: SessionServiceAsyncStub, email: str
) -> None:
    attempts = await asyncio.gather(*(_register(stub, email) for _ in range(20)), return_exceptions=True)

    winners = [a for a in attempts if isinstance(a, pb.RegisterResponse)]
    losers = [a for a in attempts if isinstance(a, grpc.aio.AioRpcError)]
    assert len(winners) == 1
    assert len(losers) == 19
    assert {e.code() for e in losers} == {grpc.StatusCode.ALREADY_EXISTS}
    assert {reason(e) for e in losers} == {"EMAIL_TAKEN"}
    signed_in = await _login(stub, email)
    assert signed_in.user.name == winners[0].user.name


async def test_wrong_password_and_unknown_email_look_the_same(
    stub: SessionServiceAsyncStub, email: str
) -> None:
    await _register(stub, email)

    wrong = await failure(_login(stub, email, "wrong password, sorry"))
    unknown = await failure(_login(stub, "nobody-" + email))

    assert wrong.code() == unknown.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason(wrong) == reason(unknown) == "INVALID_CREDENTIALS"
    assert wrong.details() == unknown.details()


async def test_refresh_rotates_and_a_reused_token_revokes_the_session(
    stub: SessionServiceAsyncStub, email: str
) -> None:
    first = (await _register(stub, email)).credentials
    second = (await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=first.refresh_token))).credentials
    assert second.refresh_token != first.refresh_token
    assert second.session == first.session

    await asyncio.sleep(REFRESH_GRACE_S + 0.2)  # past the window where a retry is forgiven
    reused = await failure(stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=first.refresh_token)))
    assert reused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason(reused) == "REFRESH_TOKEN_REUSED"

    # The whole family is gone: the newest refresh token and the access tokens too.
    after = await failure(stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=second.refresh_token)))
    assert reason(after) == "SESSION_ENDED"
    revoked = await failure(
        stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(second.access_token))
    )
    assert revoked.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason(revoked) == "SESSION_REVOKED"


async def test_sessions_are_listed_and_a_revoked_one_ends_at_once(
    stub: SessionServiceAsyncStub, email: str
) -> None:
    laptop = (await _register(stub, email)).credentials
    phone = (await _login(stub, email)).credentials
    listed = await stub.ListSessions(
        pb.ListSessionsRequest(parent="users/me"), metadata=bearer(laptop.access_token)
    )
    assert {s.name for s in listed.sessions} == {laptop.session, phone.session}
    assert [s.current for s in listed.sessions if s.name == laptop.session] == [True]

    await stub.RevokeSession(
        pb.RevokeSessionRequest(name=phone.session), metadata=bearer(laptop.access_token)
    )

    refused = await failure(stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=phone.refresh_token)))
    assert reason(refused) == "SESSION_ENDED"
    cut_off = await failure(
        stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(phone.access_token))
    )
    assert reason(cut_off) == "SESSION_REVOKED"
    still = await stub.ListSessions(
        pb.ListSessionsRequest(parent="users/me"), metadata=bearer(laptop.access_token)
    )
    assert [s.name for s in still.sessions] == [laptop.session]


async def test_logout_ends_the_current_session(stub: SessionServiceAsyncStub, email: str) -> None:
    credentials = (await _register(stub, email)).credentials

    await stub.Logout(pb.LogoutRequest(), metadata=bearer(credentials.access_token))

    assert reason(
        await failure(stub.Logout(pb.LogoutRequest(), metadata=bearer(credentials.access_token)))
    ) == ("SESSION_REVOKED")
    refused = await failure(
        stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=credentials.refresh_token))
    )
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_password_reset_is_single_use_and_ends_every_session(
    stub: SessionServiceAsyncStub, email: str, mailbox: Path
) -> None:
    old = (await _register(stub, email)).credentials
    await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email=email))
    [mail] = await wait_for_mail(mailbox, email, RESET_SUBJECT)
    token = reset_token_from(mail)
    new_password = "a much better passphrase"

    await stub.ResetPassword(pb.ResetPasswordRequest(reset_token=token, new_password=new_password))

    again = await failure(
        stub.ResetPassword(pb.ResetPasswordRequest(reset_token=token, new_password=new_password))
    )
    assert again.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(again) == "INVALID_RESET_TOKEN"
    assert reason(await failure(_login(stub, email))) == "INVALID_CREDENTIALS"
    assert (await _login(stub, email, new_password)).user.email == email
    ended = await failure(stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=old.refresh_token)))
    assert reason(ended) == "SESSION_ENDED"


async def test_reset_request_for_an_unknown_email_answers_the_same_and_sends_nothing(
    stub: SessionServiceAsyncStub, email: str, mailbox: Path, session_app: SessionApp
) -> None:
    reply = await stub.RequestPasswordReset(pb.RequestPasswordResetRequest(email=email))

    assert reply == pb.RequestPasswordResetResponse()
    await outbox_drained(session_app)
    assert read_mail(mailbox, email) == []


async def test_api_keys_are_shown_once_scoped_and_revocable(
    stub: SessionServiceAsyncStub, email: str, mailbox: Path
) -> None:
    owner = (await register_verified(stub, mailbox, email)).credentials
    auth = bearer(owner.access_token)
    created = await stub.CreateApiKey(
        pb.CreateApiKeyRequest(
            parent="users/me",
            api_key=pb.ApiKey(display_name="partner", scopes=["chat", "history.read"]),
            request_id="7d1c0f1e-4b8e-4a55-9d1d-3a9b8c2f6e01",
        ),
        metadata=auth,
    )
    assert created.key.startswith("pk_")
    assert created.api_key.key_prefix == created.key[:10]

    retried = await stub.CreateApiKey(
        pb.CreateApiKeyRequest(
            parent="users/me",
            api_key=pb.ApiKey(display_name="partner", scopes=["chat", "history.read"]),
            request_id="7d1c0f1e-4b8e-4a55-9d1d-3a9b8c2f6e01",
        ),
        metadata=auth,
    )
    assert retried.api_key.name == created.api_key.name
    assert retried.key == ""  # shown once
    listed = await stub.ListApiKeys(pb.ListApiKeysRequest(parent="users/me"), metadata=auth)
    assert [k.name for k in listed.api_keys] == [created.api_key.name]
    assert created.key not in str(listed)

    signed = await stub.Login(pb.LoginRequest(api_key=created.key))
    assert signed.credentials.refresh_token == ""
    key_auth = bearer(signed.credentials.access_token)
    assert (await stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=key_auth)).user.email == email
    limited = await failure(stub.ListSessions(pb.ListSessionsRequest(parent="users/me"), metadata=key_auth))
    assert limited.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason(limited) == "MISSING_SCOPE"

    await stub.RevokeApiKey(pb.RevokeApiKeyRequest(name=created.api_key.name), metadata=auth)
    refused = await failure(stub.Login(pb.LoginRequest(api_key=created.key)))
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason(refused) == "INVALID_API_KEY"


async def test_api_key_scopes_are_checked(stub: SessionServiceAsyncStub, email: str, mailbox: Path) -> None:
    auth = bearer((await register_verified(stub, mailbox, email)).credentials.access_token)

    error = await failure(
        stub.CreateApiKey(
            pb.CreateApiKeyRequest(
                parent="users/me", api_key=pb.ApiKey(display_name="x", scopes=["account", "root"])
            ),
            metadata=auth,
        )
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"api_key.scopes[0]", "api_key.scopes[1]"}
    listed = await stub.ListApiKeys(
        pb.ListApiKeysRequest(parent="users/me", show_revoked=True), metadata=auth
    )
    assert list(listed.api_keys) == []


async def test_nobody_reaches_another_users_sessions_or_keys(
    stub: SessionServiceAsyncStub, email: str
) -> None:
    alice = (await _register(stub, email)).credentials
    mallory = (await _register(stub, "mallory-" + email)).credentials

    for call in (
        stub.ListSessions(
            pb.ListSessionsRequest(parent=alice.session.split("/sessions/")[0]),
            metadata=bearer(mallory.access_token),
        ),
        stub.RevokeSession(
            pb.RevokeSessionRequest(name=alice.session), metadata=bearer(mallory.access_token)
        ),
        stub.ListApiKeys(
            pb.ListApiKeysRequest(parent=alice.session.split("/sessions/")[0]),
            metadata=bearer(mallory.access_token),
        ),
    ):
        error = await failure(call)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason(error) == "NOT_OWNER"
    # Alice's session was not touched.
    assert (await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=alice.refresh_token))).credentials


async def test_negative_page_size_is_invalid(stub: SessionServiceAsyncStub, email: str) -> None:
    auth = bearer((await _register(stub, email)).credentials.access_token)

    error = await failure(
        stub.ListSessions(pb.ListSessionsRequest(parent="users/me", page_size=-1), metadata=auth)
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == {"page_size": "must not be negative"}

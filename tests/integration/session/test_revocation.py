"""Ending access is complete and immediate: API key tokens, every session at once, role,
tier and disabled changes, all on the next call rather than at token expiry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf.field_mask_pb2 import FieldMask

from parley.session.v1 import session_pb2 as pb
from svc_session.app import SessionApp
from tests.integration.session.helpers import PASSWORD, bearer, failure, reason, register_verified

if TYPE_CHECKING:
    from parley.session.v1.session_pb2_grpc import SessionServiceAsyncStub

pytestmark = pytest.mark.integration


async def _me(stub: SessionServiceAsyncStub, token: str) -> pb.GetCurrentUserResponse:
    return await stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(token))


async def _key_token(
    stub: SessionServiceAsyncStub, auth: tuple[tuple[str, str], ...]
) -> tuple[pb.ApiKey, str]:
    created = await stub.CreateApiKey(
        pb.CreateApiKeyRequest(parent="users/me", api_key=pb.ApiKey(display_name="k", scopes=["chat"])),
        metadata=auth,
    )
    token = (await stub.Login(pb.LoginRequest(api_key=created.key))).credentials.access_token
    return created.api_key, token


async def test_revoking_an_api_key_ends_the_tokens_issued_from_it(
    stub: SessionServiceAsyncStub, email: str, mailbox: Path
) -> None:
    auth = bearer((await register_verified(stub, mailbox, email)).credentials.access_token)
    key, token = await _key_token(stub, auth)
    other_key, other_token = await _key_token(stub, auth)
    assert (await _me(stub, token)).user.email == email

    await stub.RevokeApiKey(pb.RevokeApiKeyRequest(name=key.name), metadata=auth)

    ended = await failure(_me(stub, token))
    assert ended.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason(ended) == "API_KEY_REVOKED"
    # Only that key's tokens: the other key and the owner's session go on.
    assert (await _me(stub, other_token)).user.email == email
    assert (await stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=auth)).user.email == email
    assert other_key.name != key.name


async def test_end_all_sessions_ends_every_token_issued_before_it(
    stub: SessionServiceAsyncStub, email: str, mailbox: Path
) -> None:
    laptop = (await register_verified(stub, mailbox, email)).credentials
    login = pb.LoginRequest(password=pb.PasswordCredential(email=email, password=PASSWORD))
    phone = (await stub.Login(login)).credentials
    _key, key_token = await _key_token(stub, bearer(laptop.access_token))

    await stub.EndAllSessions(
        pb.EndAllSessionsRequest(parent="users/me"), metadata=bearer(laptop.access_token)
    )

    for token in (laptop.access_token, phone.access_token, key_token):
        ended = await failure(_me(stub, token))
        assert reason(ended) == "TOKEN_REVOKED"
    for refresh in (laptop.refresh_token, phone.refresh_token):
        refused = await failure(stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=refresh)))
        assert reason(refused) == "SESSION_ENDED"
    # Signing in again works at once, and only the new session is listed.
    again = (await stub.Login(login)).credentials
    listed = await stub.ListSessions(
        pb.ListSessionsRequest(parent="users/me"), metadata=bearer(again.access_token)
    )
    assert [s.name for s in listed.sessions] == [again.session]


async def test_nobody_ends_another_users_sessions(
    stub: SessionServiceAsyncStub, email: str, mailbox: Path
) -> None:
    alice = await register_verified(stub, mailbox, email)
    mallory = await register_verified(stub, mailbox, "mallory-" + email)

    error = await failure(
        stub.EndAllSessions(
            pb.EndAllSessionsRequest(parent=alice.user.name),
            metadata=bearer(mallory.credentials.access_token),
        )
    )

    assert reason(error) == "NOT_OWNER"
    assert (await _me(stub, alice.credentials.access_token)).user.email == email


async def test_a_demoted_admins_token_loses_the_role_on_its_next_call(
    stub: SessionServiceAsyncStub, email: str, mailbox: Path, admin_token: str, session_app: SessionApp
) -> None:
    deputy = await register_verified(stub, mailbox, email)
    await session_app.accounts.grant_admin(email)
    deputy_auth = bearer(deputy.credentials.access_token)
    assert (await stub.ListUsers(pb.ListUsersRequest(email_prefix=email), metadata=deputy_auth)).users

    await stub.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(name=deputy.user.name, role=pb.ROLE_USER), update_mask=FieldMask(paths=["role"])
        ),
        metadata=bearer(admin_token),
    )

    refused = await failure(stub.ListUsers(pb.ListUsersRequest(), metadata=deputy_auth))
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason(refused) == "ADMIN_ONLY"


async def test_a_tier_change_sizes_the_next_calls_buckets(
    stub: SessionServiceAsyncStub, email: str, mailbox: Path, admin_token: str, session_app: SessionApp
) -> None:
    user = await register_verified(stub, mailbox, email)
    token = user.credentials.access_token  # says "free"
    descriptor = ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="access_token", value=f"Bearer {token}")]
    )
    request = rls_pb2.RateLimitRequest(domain="parley", descriptors=[descriptor])
    target = f"{session_app.settings.internal_host}:{session_app.internal_port}"
    async with grpc.aio.insecure_channel(target) as internal:
        rls = rls_pb2_grpc.RateLimitServiceStub(internal)
        before = await rls.ShouldRateLimit(request)  # type: ignore[misc]
        await stub.UpdateUser(
            pb.UpdateUserRequest(
                user=pb.User(name=user.user.name, tier="pro"), update_mask=FieldMask(paths=["tier"])
            ),
            metadata=bearer(admin_token),
        )
        after = await rls.ShouldRateLimit(request)  # type: ignore[misc]

    assert before.statuses[0].current_limit.name == "user:free"
    assert after.statuses[0].current_limit.name == "user:pro"


async def test_a_disabled_account_is_refused_on_its_next_call_and_enabling_revives_nothing(
    stub: SessionServiceAsyncStub, email: str, mailbox: Path, admin_token: str
) -> None:
    user = await register_verified(stub, mailbox, email)
    _key, key_token = await _key_token(stub, bearer(user.credentials.access_token))

    await stub.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(name=user.user.name, disabled=True), update_mask=FieldMask(paths=["disabled"])
        ),
        metadata=bearer(admin_token),
    )

    for token in (user.credentials.access_token, key_token):
        assert reason(await failure(_me(stub, token))) == "ACCOUNT_DISABLED"
    enabled = await stub.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(name=user.user.name, disabled=False), update_mask=FieldMask(paths=["disabled"])
        ),
        metadata=bearer(admin_token),
    )
    assert enabled.user.disabled is False
    # Enabled again, the account starts afresh: what it had before stays ended.
    assert reason(await failure(_me(stub, user.credentials.access_token))) == "TOKEN_REVOKED"
    login = pb.LoginRequest(password=pb.PasswordCredential(email=email, password=PASSWORD))
    assert (await _me(stub, (await stub.Login(login)).credentials.access_token)).user.email == email

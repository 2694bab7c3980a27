"""The wire layer of svc_session: requests in, domain calls, responses out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import grpc

from parley.session.v1 import session_pb2 as pb
from parley_core.auth import Principal, current_principal, require_admin, require_scope, resolve_user
from parley_core.errors import FieldViolation
from parley_core.paging import decode_token, encode_token, page_size
from parley_core.servicer import add_servicer
from parley_core.wire import client_address, from_timestamp, parse_name, timestamp, user_agent
from svc_session import errors
from svc_session.accounts import Accounts
from svc_session.api_keys import ApiKeys
from svc_session.email_proofs import EmailProofs
from svc_session.model import ApiKey, Credentials, Session, User
from svc_session.service_identity import ServiceTokens
from svc_session.sessions import Sessions
from svc_session.settings import SessionSettings

SERVICE = pb.DESCRIPTOR.services_by_name["SessionService"]
IDENTITY_SERVICE = pb.DESCRIPTOR.services_by_name["ServiceIdentityService"]

#: Methods callable without an access token.
PUBLIC_METHODS = frozenset(
    f"/{SERVICE.full_name}/{name}"
    for name in ("Register", "Login", "RefreshToken", "RequestPasswordReset", "ResetPassword", "VerifyEmail")
)

_ROLES = {"user": pb.ROLE_USER, "admin": pb.ROLE_ADMIN}
_ROLE_NAMES = {pb.ROLE_USER: "user", pb.ROLE_ADMIN: "admin"}

Context = grpc.aio.ServicerContext[Any, Any]


class CallerLimits(Protocol):
    """Per-user and per-key request buckets (svc_session.ratelimit.RateLimits)."""

    async def check_user(self, user_id: str, tier: str) -> None: ...

    async def check_api_key(self, key_id: str) -> None: ...


class SessionServiceServicer:
    """parley.session.v1.SessionService."""

    def __init__(
        self,
        settings: SessionSettings,
        accounts: Accounts,
        sessions: Sessions,
        api_keys: ApiKeys,
        proofs: EmailProofs,
        limits: CallerLimits,
    ) -> None:
        self._settings = settings
        self._accounts = accounts
        self._sessions = sessions
        self._api_keys = api_keys
        self._proofs = proofs
        self._limits = limits

    async def _caller(self, scope: str | None = "account") -> Principal:
        principal = current_principal()
        if principal.api_key_id:
            await self._limits.check_api_key(principal.api_key_id)
        else:
            await self._limits.check_user(principal.user_id, principal.tier)
        if scope is not None:
            require_scope(principal, scope)
        return principal

    async def Register(self, request: pb.RegisterRequest, context: Context) -> pb.RegisterResponse:
        user, credentials = await self._accounts.register(
            request.email,
            request.password,
            request.display_name,
            user_agent(context),
            client_address(context, self._settings.trusted_proxies),
        )
        return pb.RegisterResponse(user=_user(user), credentials=_credentials(credentials))

    async def Login(self, request: pb.LoginRequest, context: Context) -> pb.LoginResponse:
        kind = request.WhichOneof("credential")
        if kind == "password":
            user, credentials = await self._accounts.login_password(
                request.password.email,
                request.password.password,
                request.user_agent or user_agent(context),
                client_address(context, self._settings.trusted_proxies),
            )
        elif kind == "api_key":
            user, credentials = await self._api_keys.login(
                request.api_key, client_address(context, self._settings.trusted_proxies)
            )
        else:
            raise errors.bad_request(FieldViolation("credential", "set password or api_key"))
        return pb.LoginResponse(user=_user(user), credentials=_credentials(credentials))

    async def RefreshToken(
        self, request: pb.RefreshTokenRequest, context: Context
    ) -> pb.RefreshTokenResponse:
        if not request.refresh_token:
            raise errors.bad_request(FieldViolation("refresh_token", "must not be empty"))
        credentials = await self._sessions.refresh(request.refresh_token)
        return pb.RefreshTokenResponse(credentials=_credentials(credentials))

    async def Logout(self, request: pb.LogoutRequest, context: Context) -> pb.LogoutResponse:
        await self._sessions.logout(await self._caller(scope=None))
        return pb.LogoutResponse()

    async def GetCurrentUser(
        self, request: pb.GetCurrentUserRequest, context: Context
    ) -> pb.GetCurrentUserResponse:
        principal = await self._caller(scope=None)
        return pb.GetCurrentUserResponse(user=_user(await self._accounts.get_user(principal.user_id)))

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: Context
    ) -> pb.ListSessionsResponse:
        principal = await self._caller()
        user = await self._accounts.get_user(resolve_user(principal, request.parent))
        page = await self._sessions.list(user, page_size(request.page_size, 50, 200), request.page_token)
        sessions = [_session(s, principal) for s in page.items if isinstance(s, Session)]
        return pb.ListSessionsResponse(sessions=sessions, next_page_token=page.next_token)

    async def RevokeSession(
        self, request: pb.RevokeSessionRequest, context: Context
    ) -> pb.RevokeSessionResponse:
        principal = await self._caller()
        ids = parse_name(request.name, "users/{user}/sessions/{session}", "name")
        user_id = resolve_user(principal, f"users/{ids['user']}", field_name="name")
        session = await self._sessions.revoke(user_id, ids["session"])
        return pb.RevokeSessionResponse(session=_session(session, principal))

    async def RequestPasswordReset(
        self, request: pb.RequestPasswordResetRequest, context: Context
    ) -> pb.RequestPasswordResetResponse:
        await self._proofs.request_password_reset(
            request.email, client_address(context, self._settings.trusted_proxies)
        )
        return pb.RequestPasswordResetResponse()

    async def ResetPassword(
        self, request: pb.ResetPasswordRequest, context: Context
    ) -> pb.ResetPasswordResponse:
        await self._proofs.reset_password(request.reset_token, request.new_password)
        return pb.ResetPasswordResponse()

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Context
    ) -> pb.CreateApiKeyResponse:
        principal = await self._caller()
        if principal.api_key_id:
            raise errors.api_key_sign_in_cannot("CreateApiKey")
        user = await self._accounts.get_user(resolve_user(principal, request.parent))
        wanted = request.api_key
        api_key, secret = await self._api_keys.create(
            user,
            wanted.display_name,
            list(wanted.scopes),
            from_timestamp(wanted.expire_time, wanted.HasField("expire_time")),
            request.request_id,
        )
        return pb.CreateApiKeyResponse(api_key=_api_key(api_key), key=secret)

    async def ListApiKeys(self, request: pb.ListApiKeysRequest, context: Context) -> pb.ListApiKeysResponse:
        principal = await self._caller()
        user_id = resolve_user(principal, request.parent)
        size = page_size(request.page_size, 50, 200)
        page = await self._api_keys.list(user_id, request.show_revoked, size, request.page_token)
        keys = [_api_key(k) for k in page.items if isinstance(k, ApiKey)]
        return pb.ListApiKeysResponse(api_keys=keys, next_page_token=page.next_token)

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Context
    ) -> pb.RevokeApiKeyResponse:
        principal = await self._caller()
        ids = parse_name(request.name, "users/{user}/apiKeys/{api_key}", "name")
        user_id = resolve_user(principal, f"users/{ids['user']}", field_name="name")
        return pb.RevokeApiKeyResponse(api_key=_api_key(await self._api_keys.revoke(user_id, ids["api_key"])))

    async def ListUsers(self, request: pb.ListUsersRequest, context: Context) -> pb.ListUsersResponse:
        require_admin(await self._caller())
        size = page_size(request.page_size, 50, 200)
        position = decode_token(request.page_token)
        after = position.get("after", "")
        if not isinstance(after, str) or position.get("prefix", request.email_prefix) != request.email_prefix:
            raise errors.bad_request(FieldViolation("page_token", "does not belong to this listing"))
        users, last = await self._accounts.list_users(after, request.email_prefix, size)
        next_token = encode_token({"after": last, "prefix": request.email_prefix}) if last else ""
        return pb.ListUsersResponse(users=[_user(u) for u in users], next_page_token=next_token)

    async def UpdateUser(self, request: pb.UpdateUserRequest, context: Context) -> pb.UpdateUserResponse:
        admin = await self._caller()
        require_admin(admin)
        ids = parse_name(request.user.name, "users/{user}", "user.name")
        paths = list(request.update_mask.paths)
        violations = [
            FieldViolation("update_mask", f"{path!r} cannot be updated; use role, tier or disabled")
            for path in paths
            if path not in ("role", "tier", "disabled")
        ]
        if not paths:
            violations.append(FieldViolation("update_mask", "must name the fields to change"))
        changes: dict[str, object] = {}
        if "role" in paths:
            if request.user.role not in _ROLE_NAMES:
                violations.append(FieldViolation("user.role", "must be ROLE_USER or ROLE_ADMIN"))
            else:
                changes["role"] = _ROLE_NAMES[request.user.role]
        if "tier" in paths:
            if request.user.tier not in self._settings.tiers:
                tiers = ", ".join(sorted(self._settings.tiers))
                violations.append(FieldViolation("user.tier", f"must be one of {tiers}"))
            changes["tier"] = request.user.tier
        if "disabled" in paths:
            changes["disabled"] = request.user.disabled
        if violations:
            raise errors.bad_request(*violations)
        user = await self._accounts.update_user(admin, ids["user"], changes, request.user.etag)
        return pb.UpdateUserResponse(user=_user(user))

    async def VerifyEmail(self, request: pb.VerifyEmailRequest, context: Context) -> pb.VerifyEmailResponse:
        user = await self._proofs.verify_email(request.verification_token)
        return pb.VerifyEmailResponse(user=_user(user))

    async def ResendVerificationEmail(
        self, request: pb.ResendVerificationEmailRequest, context: Context
    ) -> pb.ResendVerificationEmailResponse:
        principal = await self._caller()
        await self._accounts.resend_verification(principal.user_id)
        return pb.ResendVerificationEmailResponse()

    async def EndAllSessions(
        self, request: pb.EndAllSessionsRequest, context: Context
    ) -> pb.EndAllSessionsResponse:
        principal = await self._caller()
        if principal.api_key_id:
            raise errors.api_key_sign_in_cannot("EndAllSessions")
        await self._accounts.end_all_sessions(resolve_user(principal, request.parent))
        return pb.EndAllSessionsResponse()


def _user(user: User) -> pb.User:
    return pb.User(
        name=f"users/{user.user_id}",
        email=user.email,
        display_name=user.display_name,
        role=_ROLES.get(user.role, pb.ROLE_UNSPECIFIED),
        tier=user.tier,
        disabled=user.disabled,
        create_time=timestamp(user.create_time),
        update_time=timestamp(user.update_time),
        etag=user.etag,
        email_verified=user.email_verified,
    )


def _credentials(credentials: Credentials) -> pb.Credentials:
    return pb.Credentials(
        access_token=credentials.access_token,
        access_token_expire_time=timestamp(credentials.access_expire_time),
        refresh_token=credentials.refresh_token,
        refresh_token_expire_time=timestamp(credentials.refresh_expire_time),
        session=f"users/{credentials.user_id}/sessions/{credentials.session_id}"
        if credentials.session_id
        else "",
    )


def _session(session: Session, caller: Principal) -> pb.Session:
    return pb.Session(
        name=f"users/{session.user_id}/sessions/{session.session_id}",
        create_time=timestamp(session.create_time),
        last_refresh_time=timestamp(session.last_refresh_time),
        expire_time=timestamp(session.expire_time),
        user_agent=session.user_agent,
        client_address=session.client_address,
        current=session.session_id == caller.session_id,
    )


def _api_key(key: ApiKey) -> pb.ApiKey:
    return pb.ApiKey(
        name=f"users/{key.user_id}/apiKeys/{key.key_id}",
        display_name=key.display_name,
        scopes=sorted(key.scopes),
        key_prefix=key.key_prefix,
        create_time=timestamp(key.create_time),
        expire_time=timestamp(key.expire_time),
        revoke_time=timestamp(key.revoke_time),
    )


class ServiceIdentityServicer:
    """parley.session.v1.ServiceIdentityService, on the internal listener only."""

    def __init__(self, tokens: ServiceTokens) -> None:
        self._tokens = tokens

    async def IssueServiceToken(
        self, request: pb.IssueServiceTokenRequest, context: Context
    ) -> pb.IssueServiceTokenResponse:
        token, expires = await self._tokens.issue(request.service, request.secret)
        return pb.IssueServiceTokenResponse(access_token=token, expire_time=timestamp(expires))


def add_service_identity(server: grpc.aio.Server, tokens: ServiceTokens) -> str:
    """Serve service identity on server (the internal listener); returns its name."""
    return add_servicer(server, IDENTITY_SERVICE, ServiceIdentityServicer(tokens))


async def register(server: grpc.aio.Server, servicer: SessionServiceServicer) -> Sequence[str]:
    """Add svc_session's servicers to server; the names are served by health and reflection."""
    return [add_servicer(server, SERVICE, servicer)]

"""Authentication every service shares: verify Parley's JWTs, know the caller, check rights.

Access tokens are ES256-signed JWTs issued by svc_session. A service verifies them locally
against svc_session's JWKS (cached; fetched again when a token names an unknown `kid`, at
most once per `min_refetch_s`), checks issuer, audience and expiry, and consults the
revocation list (Redis) so that a logout or a disabled account takes effect at once.
Identity comes only from the verified token: no header a client can set is ever trusted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from parley_core.errors import RpcError
from parley_core.observability import current_user_id, replace_behaviour

#: Every right a signed-in person has; API keys carry a subset.
USER_SCOPES = frozenset({"chat", "history.read", "history.write", "usage.read", "account"})

ALGORITHMS = ["ES256"]


@dataclass(frozen=True)
class Principal:
    """Who is calling, as the verified token says."""

    user_id: str
    role: str
    tier: str
    scopes: frozenset[str]
    session_id: str = ""
    api_key_id: str = ""
    expires_at: int = 0

    @property
    def user_name(self) -> str:
        return f"users/{self.user_id}"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


_principal: ContextVar[Principal | None] = ContextVar("parley_principal", default=None)


def current_principal() -> Principal:
    """The caller of the RPC being served; UNAUTHENTICATED when the method is public."""
    principal = _principal.get()
    if principal is None:
        raise unauthenticated("this method needs an access token")
    return principal


def unauthenticated(message: str, reason: str = "UNAUTHENTICATED") -> RpcError:
    return RpcError(grpc.StatusCode.UNAUTHENTICATED, reason, message)


def permission_denied(message: str, reason: str = "PERMISSION_DENIED", **metadata: str) -> RpcError:
    return RpcError(grpc.StatusCode.PERMISSION_DENIED, reason, message, metadata=metadata)


def require_scope(principal: Principal, scope: str) -> None:
    """PERMISSION_DENIED unless the token carries scope."""
    if scope not in principal.scopes:
        raise permission_denied(f"the token lacks the {scope!r} scope", "MISSING_SCOPE", scope=scope)


def require_admin(principal: Principal) -> None:
    """PERMISSION_DENIED unless the caller is an admin."""
    if not principal.is_admin:
        raise permission_denied("this method is for admins", "ADMIN_ONLY")


def resolve_user(principal: Principal, name: str, *, field_name: str = "parent") -> str:
    """The user id in a `users/{user}` name (`users/me` is the caller).

    Another user's name is PERMISSION_DENIED before anything is looked up, so an answer
    never reveals whether someone else's resource exists.
    """
    if name in ("users/me", principal.user_name):
        return principal.user_id
    if not name.startswith("users/") or "/" in name[len("users/") :] or name == "users/":
        from parley_core.errors import FieldViolation, invalid_argument

        raise invalid_argument([FieldViolation(field_name, "must be users/{user} or users/me")])
    raise permission_denied("callers may only act on their own resources", "NOT_OWNER")


class KeySource(Protocol):
    """Where the verification keys come from."""

    async def key_set(self, *, refresh: bool) -> KeySet: ...


class HttpKeySource:
    """svc_session's JWKS over HTTP, cached."""

    def __init__(self, url: str, *, timeout_s: float = 3.0) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._cached: KeySet | None = None
        self._lock = asyncio.Lock()

    async def key_set(self, *, refresh: bool) -> KeySet:
        async with self._lock:
            if self._cached is None or refresh:
                async with httpx.AsyncClient(timeout=self._timeout_s) as client:
                    reply = await client.get(self._url)
                    reply.raise_for_status()
                self._cached = KeySet.import_key_set(reply.json())
            return self._cached


class RevocationList(Protocol):
    """Sessions ended and users disabled before their access tokens expire."""

    async def is_revoked(self, principal: Principal) -> bool: ...


@dataclass
class JwtVerifier:
    """Verifies access tokens: signature, `kid`, algorithm, issuer, audience, time."""

    keys: KeySource
    issuer: str
    audience: str
    revocations: RevocationList | None = None
    leeway_s: int = 30
    min_refetch_s: float = 30.0
    _last_refetch: float = field(default=0.0, init=False)

    async def verify(self, token: str) -> Principal:
        try:
            header = jws.extract_compact(token.encode()).protected if token.count(".") == 2 else None
        except (JoseError, ValueError, UnicodeDecodeError):
            header = None
        if not header or header.get("alg") not in ALGORITHMS or not header.get("kid"):
            raise unauthenticated("malformed token, or an algorithm that is not accepted", "INVALID_TOKEN")
        key_set = await self.keys.key_set(refresh=False)
        if not _has_kid(key_set, str(header["kid"])):
            now = time.monotonic()
            if now - self._last_refetch >= self.min_refetch_s:
                self._last_refetch = now
                key_set = await self.keys.key_set(refresh=True)
            if not _has_kid(key_set, str(header["kid"])):
                raise unauthenticated("the token's signing key is unknown", "UNKNOWN_KEY")
        try:
            decoded = jwt.decode(token, key_set, algorithms=ALGORITHMS)
            jwt.JWTClaimsRegistry(
                leeway=self.leeway_s,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.audience},
                exp={"essential": True},
                sub={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as error:
            raise unauthenticated(f"invalid access token: {type(error).__name__}", "INVALID_TOKEN") from None
        principal = _principal_from(decoded.claims)
        if self.revocations is not None and await self.revocations.is_revoked(principal):
            raise unauthenticated("the session has ended", "SESSION_REVOKED")
        return principal


def _has_kid(key_set: KeySet, kid: str) -> bool:
    return any(key.kid == kid for key in key_set.keys)


def _principal_from(claims: dict[str, Any]) -> Principal:
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise unauthenticated("invalid access token: scope", "INVALID_TOKEN")
    return Principal(
        user_id=str(claims["sub"]),
        role=str(claims.get("role", "user")),
        tier=str(claims.get("tier", "")),
        scopes=frozenset(scope.split()),
        session_id=str(claims.get("sid", "")),
        api_key_id=str(claims.get("akid", "")),
        expires_at=int(claims["exp"]),
    )


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an `authorization: Bearer <token>` header, if any."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Verifies the access token of every call except public methods.

    The verified principal is available to the handler via `current_principal()`. A call
    without a valid token never reaches a handler that needs one.
    """

    def __init__(self, verifier: JwtVerifier, public_methods: Collection[str]) -> None:
        self._verifier = verifier
        self._public = frozenset(public_methods)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        token = bearer_token(handler_call_details.invocation_metadata)
        _principal.set(None)
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        if method in self._public or method.startswith(("/grpc.health.", "/grpc.reflection.")):
            return handler
        if token is None:
            return _refusal(handler, unauthenticated("missing access token (authorization: Bearer ...)"))
        try:
            principal = await self._verifier.verify(token)
        except RpcError as error:
            return _refusal(handler, error)
        _principal.set(principal)
        current_user_id.set(principal.user_id)
        return handler


def _refusal(handler: grpc.RpcMethodHandler[Any, Any], error: RpcError) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same kind as handler that answers error without running it."""
    if handler.unary_unary or handler.stream_unary:

        async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await context.abort_with_status(error.to_status())

        return replace_behaviour(handler, refuse)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        await context.abort_with_status(error.to_status())
        yield  # pragma: no cover - makes this an async generator

    return replace_behaviour(handler, refuse_stream)

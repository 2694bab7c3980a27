"""The server interceptor that authenticates every call, failing closed and saying nothing.

A call to a method that needs a token runs its handler only with a verified principal.
Every refusal is counted in `parley_auth_failures_total{reason}` (reason: the ErrorInfo
reason sent, such as INVALID_TOKEN or SESSION_REVOKED). A failure that is not a refusal
(Redis or the JWKS down, a bug) is never passed on as it is: the caller gets UNAVAILABLE,
reason AUTH_BACKEND_UNAVAILABLE, with RetryInfo, and a message that names no host, port or
exception; the server logs one warning line, without the token.

Service identity (internal methods, such as svc_history's AppendMessage called by
svc_router): the calling service sends its own service token (minted by svc_session, with
the internal audience and a `svc` claim) as `authorization: Bearer ...` and the user's
access token in `x-parley-user-token`. Both are verified (the user's with every revocation
check); the handler sees the user's principal with `service` set, and decides with
`require_service`. Without `x-parley-user-token`, `authorization` is taken as a user's
token as on any method, so the principal has no service and `require_service` answers
PERMISSION_DENIED. The same pair is accepted at every method of a server that has a
service verifier (the router reads and creates conversations for the user); the handler
of a public method sees the user's principal as on the user's own call. `service` comes
only from a verified service token: a user's token can never pass for a service, and a
user who sends the header with a user's token as the bearer is refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from dataclasses import replace
from typing import Any

import grpc
import structlog
from prometheus_client import CollectorRegistry, Counter

from parley_core.auth._errors import backend_unavailable, unauthenticated
from parley_core.auth._principal import Principal, _principal
from parley_core.auth._verifier import JwtVerifier
from parley_core.errors import RpcError
from parley_core.observability import current_user_id, replace_behaviour

_log = structlog.get_logger("parley.auth")

#: Methods of the server's own plumbing, never behind a token.
_ALWAYS_PUBLIC = ("/grpc.health.", "/grpc.reflection.")

#: Where a service calling an internal method on a user's behalf puts the user's token.
USER_TOKEN_HEADER = "x-parley-user-token"  # noqa: S105 - a header name, not a secret


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an `authorization: Bearer <token>` header, if any."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _user_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == USER_TOKEN_HEADER and isinstance(value, str) and value.strip():
            return value.strip()
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Verifies the access token of every call except public methods.

    The verified principal is available to the handler via `current_principal()`. A call
    without a valid token never reaches a handler that needs one. Pass the server's
    registry (the one given to `start_server`) to export the failure counter; without one
    the counter lives in a registry of its own.
    """

    def __init__(
        self,
        verifier: JwtVerifier,
        public_methods: Collection[str],
        *,
        internal_methods: Collection[str] = (),
        service_verifier: JwtVerifier | None = None,
        on_behalf_verifier: JwtVerifier | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if internal_methods and service_verifier is None:
            raise ValueError("internal methods need a service_verifier (the internal audience)")
        self._verifier = verifier
        self._service_verifier = service_verifier
        # The user's token in a service's call: a chat turn's last writes come up to its
        # length after the token was checked at the turn's start, so that verifier may
        # allow a longer leeway past `exp` (every revocation check still applies).
        self._on_behalf_verifier = on_behalf_verifier or verifier
        self._public = frozenset(public_methods)
        self._internal = frozenset(internal_methods)
        self.failures = Counter(
            "parley_auth_failures",
            "Calls refused by the auth interceptor, by ErrorInfo reason.",
            ["reason"],
            registry=registry if registry is not None else CollectorRegistry(),
        )

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
        if method in self._public or method.startswith(_ALWAYS_PUBLIC):
            return handler
        if token is None:
            return self._refusal(handler, unauthenticated("missing access token (authorization: Bearer ...)"))
        metadata = handler_call_details.invocation_metadata
        # A service acting for a user may call any method (svc_router reads and creates
        # conversations as the user); internal methods additionally require it.
        user_token = _user_token(metadata) if self._service_verifier is not None else None
        try:
            if user_token is not None:
                principal = await self._on_behalf(token, user_token)
            else:
                principal = await self._verifier.verify(token)
                if principal.service:  # only a verified service token names a service
                    principal = replace(principal, service="")
        except RpcError as error:
            return self._refusal(handler, error)
        except Exception as error:  # fail closed, whatever went wrong
            _log.warning(
                "auth failed closed",
                method=method,
                error_type=type(error).__name__,
                error=_redacted(str(error), token, user_token)[:200],
            )
            return self._refusal(handler, backend_unavailable("authentication backends"))
        _principal.set(principal)
        current_user_id.set(principal.user_id)
        return handler

    async def _on_behalf(self, service_token: str, user_token: str) -> Principal:
        """The user's principal, with the service that calls for the user."""
        assert self._service_verifier is not None  # checked in __init__
        caller = await self._service_verifier.verify(service_token)
        if not caller.service or caller.user_id != f"services/{caller.service}":
            raise unauthenticated("authorization must carry a service token here", "INVALID_TOKEN")
        user = await self._on_behalf_verifier.verify(user_token)
        return replace(user, service=caller.service)

    def _refusal(
        self, handler: grpc.RpcMethodHandler[Any, Any], error: RpcError
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """A handler of the same kind as handler that answers error without running it."""
        self.failures.labels(error.reason).inc()
        status = error.to_status()
        if handler.unary_unary or handler.stream_unary:

            async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await context.abort_with_status(status)

            return replace_behaviour(handler, refuse)

        async def refuse_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            await context.abort_with_status(status)
            yield  # pragma: no cover - makes this an async generator

        return replace_behaviour(handler, refuse_stream)


def _redacted(text: str, *tokens: str | None) -> str:
    for token in tokens:
        if token:
            text = text.replace(token, "<token>")
    return text

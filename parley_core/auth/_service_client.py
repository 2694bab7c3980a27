"""The calling side of service identity (docs/adr/0009): a service's own token, fetched
from svc_session's internal listener, cached, and renewed before it expires."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC
from typing import TYPE_CHECKING, cast

import grpc

from parley.session.v1 import session_pb2, session_pb2_grpc
from parley_core.auth._interceptor import USER_TOKEN_HEADER
from parley_core.errors import RpcError
from parley_core.tracing import client_interceptors

if TYPE_CHECKING:
    from parley.session.v1.session_pb2_grpc import ServiceIdentityServiceAsyncStub

Metadata = tuple[tuple[str, str], ...]


class ServiceTokenSource:
    """svc_router's (or any service's) token for internal calls.

    `metadata(user_token)` is what an internal call carries: the service's token as the
    bearer and the user it acts for beside it. The token is fetched once and renewed
    `renew_before_s` before it expires, by one caller while the others wait; a failure
    to fetch is UNAVAILABLE with RetryInfo (the internal listener is down) or
    UNAUTHENTICATED (a wrong secret: a deployment error).
    """

    def __init__(
        self, target: str, service: str, secret: str, *, renew_before_s: float = 60.0, timeout_s: float = 3.0
    ) -> None:
        self._target = target
        self._service = service
        self._secret = secret
        self._renew_before_s = renew_before_s
        self._timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None
        self._token = ""
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        if self._token and time.time() < self._renew_at:
            return self._token
        async with self._lock:
            if not self._token or time.time() >= self._renew_at:
                await self._fetch()
            return self._token

    async def metadata(self, user_token: str) -> Metadata:
        """Metadata of an internal call made for the user whose access token is user_token."""
        return (("authorization", f"Bearer {await self.token()}"), (USER_TOKEN_HEADER, user_token))

    async def _fetch(self) -> None:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self._target, interceptors=client_interceptors())
        stub = cast(
            "ServiceIdentityServiceAsyncStub", session_pb2_grpc.ServiceIdentityServiceStub(self._channel)
        )
        request = session_pb2.IssueServiceTokenRequest(service=self._service, secret=self._secret)
        try:
            reply = await stub.IssueServiceToken(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise RpcError(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "SERVICE_CREDENTIAL_REFUSED",
                    f"svc_session refused the credential of {self._service}",
                ) from None
            raise RpcError(
                grpc.StatusCode.UNAVAILABLE,
                "SERVICE_IDENTITY_UNAVAILABLE",
                "service identity is unavailable; retry shortly",
                retry_after_s=1.0,
            ) from None
        self._token = reply.access_token
        self._renew_at = reply.expire_time.ToDatetime(tzinfo=UTC).timestamp() - self._renew_before_s

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

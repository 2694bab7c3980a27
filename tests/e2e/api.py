"""The platform's API as the tests reach it beside the browser: gRPC-Web through Envoy's public
address, each call from a loopback address of its own.

The browser signs in from 127.0.0.1; calls made here (a sign-in for a token, a share link with
an expiry the dialog does not offer) come from other 127/8 addresses, so they never spend the
browser's sign-in buckets (tests/integration/edge/grpc_web.py says why that works).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TypeVar

import grpc
import httpx
from google.protobuf.message import Message

from parley.session.v1 import session_pb2
from tests.integration.edge.grpc_web import Reply, call, random_loopback

M = TypeVar("M", bound=Message)

#: GetAdminOverview reads a day of the ledger; on a loaded machine that took 9 s.
CALL_TIMEOUT_S = 30.0


class ApiError(AssertionError):
    """A call that should have succeeded did not."""


@dataclass(frozen=True)
class Edge:
    """Envoy's public endpoint, spoken to in gRPC-Web."""

    host: str
    port: int

    async def call(self, method: str, request: Message, token: str = "") -> Reply:
        """Call method ("/parley.session.v1.SessionService/Login"); the reply, whatever its status."""
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return await asyncio.to_thread(self._call, method, request, headers)

    def _call(self, method: str, request: Message, headers: dict[str, str]) -> Reply:
        source = httpx.HTTPTransport(local_address=random_loopback())
        with httpx.Client(transport=source, timeout=CALL_TIMEOUT_S) as client:
            return call(client, (self.host, self.port), method, request, headers)

    async def ok(self, method: str, request: Message, response: type[M], token: str = "") -> M:
        """Call method and parse its response; ApiError unless the status is OK."""
        reply = await self.call(method, request, token)
        if reply.code != grpc.StatusCode.OK:
            raise ApiError(f"{method}: {reply.code.name} {reply.message}")
        return response.FromString(reply.payload)

    async def sign_in(self, email: str, password: str) -> session_pb2.LoginResponse:
        """A password sign-in: the user and a session's access token."""
        return await self.ok(
            "/parley.session.v1.SessionService/Login",
            session_pb2.LoginRequest(
                password=session_pb2.PasswordCredential(email=email, password=password),
                user_agent="parley e2e tests",
            ),
            session_pb2.LoginResponse,
        )

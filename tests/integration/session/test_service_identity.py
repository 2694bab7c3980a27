"""Service identity: a service's credential buys a short-lived token for internal calls,
only on the internal listener, and a service token never passes for a user's."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, cast

import grpc
import pytest

from parley.session.v1 import session_pb2 as pb
from parley.session.v1 import session_pb2_grpc
from svc_session.app import SessionApp
from tests.integration.session.conftest import ROUTER_SECRET
from tests.integration.session.helpers import bearer, failure, reason

if TYPE_CHECKING:
    from parley.session.v1.session_pb2_grpc import (
        ServiceIdentityServiceAsyncStub,
        SessionServiceAsyncStub,
    )

pytestmark = pytest.mark.integration


def _identity(channel: grpc.aio.Channel) -> ServiceIdentityServiceAsyncStub:
    return cast("ServiceIdentityServiceAsyncStub", session_pb2_grpc.ServiceIdentityServiceStub(channel))


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return cast(dict[str, object], json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


async def test_a_service_trades_its_secret_for_an_internal_token(
    session_app: SessionApp, stub: SessionServiceAsyncStub
) -> None:
    target = f"{session_app.settings.internal_host}:{session_app.internal_port}"
    async with grpc.aio.insecure_channel(target) as internal:
        identity = _identity(internal)
        issued = await identity.IssueServiceToken(
            pb.IssueServiceTokenRequest(service="svc_router", secret=ROUTER_SECRET)
        )
        wrong = await failure(
            identity.IssueServiceToken(pb.IssueServiceTokenRequest(service="svc_router", secret="guess"))
        )
        unknown = await failure(
            identity.IssueServiceToken(
                pb.IssueServiceTokenRequest(service="svc_nobody", secret=ROUTER_SECRET)
            )
        )

    claims = _claims(issued.access_token)
    assert (claims["aud"], claims["svc"], claims["sub"]) == (
        "parley-internal",
        "svc_router",
        "services/svc_router",
    )
    for error in (wrong, unknown):
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason(error) == "INVALID_SERVICE_CREDENTIAL"
    # A service token is no user's token: the public API refuses it.
    refused = await failure(
        stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(issued.access_token))
    )
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_service_tokens_are_not_issued_on_the_public_port(channel: grpc.aio.Channel) -> None:
    error = await failure(
        _identity(channel).IssueServiceToken(
            pb.IssueServiceTokenRequest(service="svc_router", secret=ROUTER_SECRET)
        )
    )

    assert error.code() == grpc.StatusCode.UNIMPLEMENTED

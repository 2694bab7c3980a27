"""A service's side of service identity: ServiceTokenSource trades the secret for a token on
svc_session's internal listener, caches it, and its metadata is what AppendMessage takes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from parley.history.v1 import history_pb2 as pb
from parley_core.auth import ServiceTokenSource
from parley_core.errors import RpcError
from svc_session.app import SessionApp
from tests.integration.history.helpers import Person, message_id, new_conversation
from tests.integration.session.conftest import ROUTER_SECRET

if TYPE_CHECKING:
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub

pytestmark = pytest.mark.integration


def _source(app: SessionApp, secret: str = ROUTER_SECRET, **options: float) -> ServiceTokenSource:
    return ServiceTokenSource(
        f"{app.settings.internal_host}:{app.internal_port}", "svc_router", secret, **options
    )


async def test_the_router_appends_for_a_user_with_its_own_token(
    session_app: SessionApp, history: HistoryServiceAsyncStub, alice: Person
) -> None:
    source = _source(session_app)
    try:
        conversation = await new_conversation(history, alice, title="Through the source")
        first = await source.token()
        appended = await history.AppendMessage(
            pb.AppendMessageRequest(
                parent=conversation.name,
                message=pb.Message(
                    name=f"{conversation.name}/messages/{message_id()}", author=pb.AUTHOR_USER, text="hi"
                ),
            ),
            metadata=await source.metadata(alice.token),
        )
        assert await source.token() == first  # cached until near its expiry
    finally:
        await source.close()

    assert appended.message.text == "hi"


async def test_a_token_near_its_expiry_is_renewed(session_app: SessionApp) -> None:
    ttl = session_app.settings.service_token_ttl_s
    source = _source(session_app, renew_before_s=ttl + 1)  # always "near expiry"
    try:
        assert await source.token() != await source.token()
    finally:
        await source.close()


async def test_a_wrong_secret_is_refused_and_a_dead_listener_is_unavailable(session_app: SessionApp) -> None:
    wrong = _source(session_app, secret="not the secret")
    dead = ServiceTokenSource("127.0.0.1:1", "svc_router", ROUTER_SECRET, timeout_s=1)
    try:
        with pytest.raises(RpcError) as refused:
            await wrong.token()
        with pytest.raises(RpcError) as unavailable:
            await dead.token()
    finally:
        await wrong.close()
        await dead.close()

    assert refused.value.reason == "SERVICE_CREDENTIAL_REFUSED"
    assert unavailable.value.reason == "SERVICE_IDENTITY_UNAVAILABLE"
    assert unavailable.value.retry_after_s

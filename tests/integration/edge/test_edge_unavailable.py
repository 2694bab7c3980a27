"""A service the edge cannot reach: callers get the platform's UNAVAILABLE, with an ErrorInfo
and a RetryInfo, never Envoy's words about its upstream (natively and over gRPC-Web)."""

from __future__ import annotations

import secrets
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from edge_proxy.render import UNAVAILABLE_MESSAGE, UNAVAILABLE_RETRY_S, Address
from parley.chat.v1 import chat_pb2
from parley_core.errors import details_of
from parley_core.stubs import chat_stub, session_stub
from parley_stack.testing import LocalStack
from tests.integration.edge.grpc_web import call, client_from, random_loopback
from tests.integration.edge.own_edge import closed_port, own_edge
from tests.integration.session.helpers import register_verified

pytestmark = pytest.mark.integration


def _assert_platform_unavailable(
    code: grpc.StatusCode | None, message: str | None, details: list[object]
) -> None:
    assert code == grpc.StatusCode.UNAVAILABLE
    assert message == UNAVAILABLE_MESSAGE
    [info] = [d for d in details if isinstance(d, error_details_pb2.ErrorInfo)]
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "SERVICE_UNAVAILABLE",
        "parley.dev",
        {"source": "edge"},
    )
    [retry] = [d for d in details if isinstance(d, error_details_pb2.RetryInfo)]
    assert retry.retry_delay.seconds == UNAVAILABLE_RETRY_S


async def test_a_service_the_edge_cannot_reach_is_unavailable_in_the_platforms_words(
    edge: str, local_stack: LocalStack, tmp_path: Path
) -> None:
    async with grpc.aio.insecure_channel(edge) as channel:
        registered = await register_verified(
            session_stub(channel),
            local_stack.config.data_dir("mailbox"),
            f"gone-{secrets.token_hex(5)}@parley.test",
        )
    token = registered.credentials.access_token
    down = Address("127.0.0.1", closed_port())
    async with own_edge(local_stack, tmp_path / "envoy.log", svc_router=down) as own:
        async with grpc.aio.insecure_channel(own.public) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await chat_stub(channel).ListModels(
                    chat_pb2.ListModelsRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=10
                )
        host, port = own.public.rsplit(":", 1)
        with client_from(random_loopback()) as browser:
            web = call(
                browser,
                (host, int(port)),
                "/parley.chat.v1.ChatService/ListModels",
                chat_pb2.ListModelsRequest(),
                headers={"authorization": f"Bearer {token}"},
            )

    native = raised.value
    _assert_platform_unavailable(native.code(), native.details(), details_of(native))
    _assert_platform_unavailable(web.code, web.message, web.details)
    assert web.http_status == 503
    for said in (native.details() or "", web.message):
        assert "upstream" not in said, said

"""A server boots on a free port and answers health, reflection and UNIMPLEMENTED for the
methods its servicer does not define (parley_core.server and parley_core.servicer).

The services themselves need their servers to start; their boots are tested with the real
servers under tests/integration/.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import grpc
import httpx
import pytest
from google.protobuf.descriptor import ServiceDescriptor
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

import svc_ledger.servicer
from parley.chat.v1 import chat_pb2
from parley.ledger.v1 import ledger_pb2
from parley_core.errors import details_of
from parley_core.logging import configure_logging
from parley_core.server import RunningServer, start_server
from parley_core.servicer import add_servicer
from parley_core.settings import ServiceSettings
from parley_core.stubs import chat_stub, health_stub, ledger_stub, reflection_stub

Register = Callable[[grpc.aio.Server], Awaitable[Sequence[str]]]


async def _none_of(server: grpc.aio.Server, service: ServiceDescriptor) -> Sequence[str]:
    return [add_servicer(server, service, object())]


SERVICES: dict[str, tuple[Register, str]] = {
    # LedgerService's descriptor with a servicer that defines none of its methods.
    "svc_ledger": (
        lambda s: _none_of(s, svc_ledger.servicer.SERVICE),
        "parley.ledger.v1.LedgerService",
    ),
}


@pytest.fixture(params=sorted(SERVICES))
async def service(request: pytest.FixtureRequest) -> AsyncIterator[tuple[RunningServer, str]]:
    register, full_name = SERVICES[request.param]
    running = await start_server(ServiceSettings(shutdown_grace_s=1), register)
    try:
        yield running, full_name
    finally:
        await running.stop()


async def test_answers_health_for_the_server_and_its_service(service: tuple[RunningServer, str]) -> None:
    running, full_name = service
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = health_stub(channel)
        for name in ("", full_name):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_lists_its_service_by_reflection(service: tuple[RunningServer, str]) -> None:
    running, full_name = service
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = reflection_stub(channel)
        call = stub.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        reply = await call.read()
        await call.done_writing()
    names = {s.name for s in reply.list_services_response.service}
    assert full_name in names
    assert "grpc.health.v1.Health" in names


async def test_unbuilt_method_is_unimplemented_with_error_info(service: tuple[RunningServer, str]) -> None:
    running, _ = service
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        generic = channel.unary_unary(
            "/parley.chat.v1.ChatService/ListModels",
            request_serializer=chat_pb2.ListModelsRequest.SerializeToString,
            response_deserializer=chat_pb2.ListModelsResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await generic(chat_pb2.ListModelsRequest())
    # Each server knows only its own service: others answer UNIMPLEMENTED from gRPC itself.
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_unbuilt_methods_answer_unimplemented_with_details() -> None:
    register, _ = SERVICES["svc_ledger"]
    running = await start_server(ServiceSettings(shutdown_grace_s=1), register)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = ledger_stub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetBudget(ledger_pb2.GetBudgetRequest(name="users/me/budget"))
    finally:
        await running.stop()
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    [info] = [d for d in details_of(caught.value) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert info.reason == "METHOD_NOT_IMPLEMENTED"
    assert info.metadata["method"] == "/parley.ledger.v1.LedgerService/GetBudget"


async def test_streaming_method_answers_unimplemented() -> None:
    async def register(server: grpc.aio.Server) -> Sequence[str]:
        # A servicer that defines none of the chat service's methods.
        return [add_servicer(server, chat_pb2.DESCRIPTOR.services_by_name["ChatService"], object())]

    running = await start_server(ServiceSettings(shutdown_grace_s=1), register)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = chat_stub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stub.StreamTurn(chat_pb2.StreamTurnRequest()):
                    pass
    finally:
        await running.stop()
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_each_rpc_writes_one_json_log_line_and_counts_in_metrics(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", "info")
    register, _ = SERVICES["svc_ledger"]
    running = await start_server(ServiceSettings(shutdown_grace_s=1), register)
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = ledger_stub(channel)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.GetAdminOverview(
                    ledger_pb2.GetAdminOverviewRequest(), metadata=[("traceparent", traceparent)]
                )
        assert running.metrics_port is not None
        # The server records the RPC just after sending its status; poll briefly for it.
        async with httpx.AsyncClient() as http:
            for _ in range(100):
                exposition = (await http.get(f"http://127.0.0.1:{running.metrics_port}/metrics")).text
                if "parley_grpc_requests_total{" in exposition:
                    break
                await asyncio.sleep(0.02)
    finally:
        await running.stop()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"event": "rpc"' in line]
    assert len(lines) == 1
    [line] = lines
    assert line["method"] == "/parley.ledger.v1.LedgerService/GetAdminOverview"
    assert line["status"] == "UNIMPLEMENTED"
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert line["peer"].startswith("ipv4:127.0.0.1:")
    assert line["duration_ms"] >= 0
    logout = 'method="/parley.ledger.v1.LedgerService/GetAdminOverview"'
    assert f'parley_grpc_requests_total{{code="UNIMPLEMENTED",{logout}}} 1.0' in exposition
    assert f"parley_grpc_request_duration_seconds_count{{{logout}}} 1.0" in exposition

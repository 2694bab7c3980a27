"""Trace context across a gRPC call: the client interceptors' span and metadata, the server
interceptor's span as its child; and the settings' service name and empty default export."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from parley_core.server import start_server
from parley_core.settings import ServiceSettings
from parley_core.stubs import health_stub
from parley_core.tracing import client_interceptors, configure_tracing, event_spans
from svc_history.settings import HistorySettings


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """Finished spans of this process, in memory (the global provider can be set only once)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield spans
    spans.shutdown()


def _ours(spans: tuple[ReadableSpan, ...], trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]


async def test_a_call_through_the_client_interceptors_is_the_server_span_s_parent(
    exporter: InMemorySpanExporter,
) -> None:
    async def register(server: grpc.aio.Server) -> list[str]:
        return []

    running = await start_server(ServiceSettings(shutdown_grace_s=1, metrics_port=-1), register)
    tracer = trace.get_tracer("test")
    try:
        with tracer.start_as_current_span("caller") as caller:
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{running.port}", interceptors=client_interceptors()
            ) as channel:
                reply = await health_stub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    finally:
        await running.stop()
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

    trace_id = caller.get_span_context().trace_id
    spans = _ours(exporter.get_finished_spans(), trace_id)
    method = "/grpc.health.v1.Health/Check"
    [client] = [s for s in spans if s.kind is SpanKind.CLIENT]
    [server] = [s for s in spans if s.kind is SpanKind.SERVER]
    assert client.name == server.name == method
    assert client.parent is not None
    assert client.parent.span_id == caller.get_span_context().span_id
    assert server.parent is not None
    assert client.context is not None
    assert server.parent.span_id == client.context.span_id
    assert client.attributes is not None
    assert client.attributes["rpc.grpc.status_code"] == 0


def test_an_event_s_consumer_span_is_the_child_of_its_publisher_s(exporter: InMemorySpanExporter) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    event_spans("usage record", [{"traceparent": traceparent}], 1_000)
    spans = _ours(exporter.get_finished_spans(), 0x0AF7651916CD43DD8448EB211C80319C)
    [span] = [s for s in spans if s.name == "usage record"]
    assert span.kind is SpanKind.CONSUMER
    assert span.parent is not None
    assert span.parent.span_id == 0xB7AD6B7169203331


def test_each_service_names_itself_after_its_settings_prefix() -> None:
    assert HistorySettings(keyspace="history").service_name == "svc_history"
    assert ServiceSettings().service_name == "parley"


def test_no_endpoint_exports_nothing_and_installs_no_provider() -> None:
    before = trace.get_tracer_provider()
    configure_tracing("svc_router", "").shutdown()
    assert trace.get_tracer_provider() is before

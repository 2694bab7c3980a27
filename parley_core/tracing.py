"""Where a process's spans go, and the trace context on its outgoing gRPC calls.

Spans are exported over OTLP/gRPC when the service's `otlp_endpoint` setting is set, and
nowhere otherwise: then the API's no-op tracer still carries the caller's trace id
through the server interceptor, so log lines and outgoing calls keep the incoming trace
without any span being recorded. Each process names itself with the `service.name`
resource attribute (`svc_router`, `svc_history-indexer`, ...).

The client interceptors make one CLIENT span per outgoing call and put its W3C
`traceparent` into the call's metadata, so the callee's server span is its child.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc
import structlog
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

__all__ = ["Tracing", "client_interceptors", "configure_tracing", "event_spans", "inject_headers"]

_log = structlog.get_logger("parley.tracing")
_tracer = trace.get_tracer("parley.grpc.client")


class Tracing:
    """A configured export: flush and stop it when the process stops."""

    def __init__(self, provider: TracerProvider | None) -> None:
        self._provider = provider

    def shutdown(self) -> None:
        """Export what is still buffered (a few seconds at most), then stop exporting."""
        if self._provider is not None:
            self._provider.force_flush(timeout_millis=5000)
            self._provider.shutdown()


def configure_tracing(service_name: str, endpoint: str, *, instance: str = "") -> Tracing:
    """Export this process's spans to the OTLP/gRPC collector at endpoint (host:port or a
    URL); record nothing when endpoint is empty. Call once, before serving."""
    if not endpoint:
        return Tracing(None)
    # Imported here: a process that exports nothing never loads the exporter's gRPC stubs.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    attributes = {SERVICE_NAME: service_name}
    if instance:
        attributes[SERVICE_INSTANCE_ID] = instance
    provider = TracerProvider(resource=Resource.create(attributes))
    target = endpoint if "://" in endpoint else f"http://{endpoint}"
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=target, insecure=True), schedule_delay_millis=1000)
    )
    trace.set_tracer_provider(provider)
    _log.info("exporting traces", endpoint=target, service=service_name)
    return Tracing(provider)


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """headers plus the current trace context (`traceparent`, `tracestate`), for calls made
    through clients that take headers but no interceptors (Triton's)."""
    carrier = dict(headers or {})
    propagate.inject(carrier)
    return carrier


def event_spans(
    name: str, carriers: Iterable[Mapping[str, str]], start_time_ns: int, *, outcome: str = "ok"
) -> None:
    """One CONSUMER span per event handled in a batch, from start_time_ns to now, each the
    child of the span that published its event (the event's `traceparent` property), so the
    consumer's work shows in the trace of the call that caused it."""
    tracer = trace.get_tracer("parley.events")
    for carrier in carriers:
        parent = propagate.extract(dict(carrier))
        span = tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.CONSUMER,
            start_time=start_time_ns,
            attributes={"messaging.system": "pulsar", "parley.outcome": outcome},
        )
        if outcome != "ok":
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end()


def _with_trace_context(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    """The call's details with the current span's context in its metadata."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    for key, value in carrier.items():
        metadata[key] = value
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


def _method_name(details: grpc.aio.ClientCallDetails) -> str:
    method = details.method
    return method.decode() if isinstance(method, bytes) else str(method)


#: Tasks that end a streaming call's span once its status is known; kept so they finish.
_pending: set[asyncio.Task[None]] = set()


async def _end_when_done(span: Span, call: Any) -> None:
    code = grpc.StatusCode.UNKNOWN
    try:
        code = await call.code()
    finally:  # the span ends whatever happened, cancellation included
        _record_status(span, code)
        span.end()


def _record_status(span: Span, code: grpc.StatusCode) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name))


class _ClientTracing:
    """The shared part of the four interceptor kinds: span, context, status."""

    async def _traced(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        method = _method_name(details)
        service, _, name = method.lstrip("/").partition("/")
        span = _tracer.start_span(
            method,
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
        with trace.use_span(span, end_on_exit=False):
            try:
                call = await continuation(_with_trace_context(details), request)
            except BaseException as error:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                span.end()
                raise
        task = asyncio.ensure_future(_end_when_done(span, call))
        _pending.add(task)
        task.add_done_callback(_pending.discard)
        return call


class _UnaryUnary(_ClientTracing, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._traced(continuation, client_call_details, request)


class _UnaryStream(_ClientTracing, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._traced(continuation, client_call_details, request)


class _StreamUnary(_ClientTracing, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await self._traced(continuation, client_call_details, request_iterator)


class _StreamStream(_ClientTracing, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await self._traced(continuation, client_call_details, request_iterator)


def client_interceptors() -> Sequence[grpc.aio.ClientInterceptor]:
    """Interceptors for `grpc.aio.insecure_channel(..., interceptors=...)`: a CLIENT span
    per call, its trace context in the call's metadata."""
    return [_UnaryUnary(), _UnaryStream(), _StreamUnary(), _StreamStream()]

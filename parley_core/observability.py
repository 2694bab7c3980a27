"""One server interceptor for the three signals: a log line, metrics and a span per RPC.

It is also the one place where a domain `RpcError` becomes the wire status with its
details, so servicers raise and never build statuses themselves.

The log line carries method, status, duration, peer, user id (when the auth layer has set
one) and the trace id; the trace context comes from the caller's `traceparent` metadata,
so a request keeps one trace id across services.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc
import structlog
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Histogram

from parley_core.errors import RpcError, from_unexpected

__all__ = [
    "ObservabilityInterceptor",
    "RpcMetrics",
    "current_user_id",
    "replace_behaviour",
]

#: Set by the auth layer once a caller is known (before the handler runs, in the RPC's own
#: context); read when the RPC's log line is written.
current_user_id: ContextVar[str] = ContextVar("current_user_id", default="")

_log = structlog.get_logger("parley.rpc")
_tracer = trace.get_tracer("parley")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class RpcMetrics:
    """The per-method request counter and latency histogram of one service."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "parley_grpc_requests",
            "RPCs handled, by method and status code.",
            ["method", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "parley_grpc_request_duration_seconds",
            "Time from receiving an RPC to sending its status, by method.",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )


class _Metadata:
    """Adapts gRPC metadata to OpenTelemetry's getter protocol."""

    @staticmethod
    def get(carrier: dict[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if value is not None else None

    @staticmethod
    def keys(carrier: dict[str, str]) -> list[str]:
        return list(carrier)


def _status_of(context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # some grpc versions report the integer value
        return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, BaseException) and type(error).__name__ == "CancelledError":
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    """Logs, measures and traces every RPC of a server."""

    def __init__(self, metrics: RpcMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        carrier = {k: v for k, v in (handler_call_details.invocation_metadata or ()) if isinstance(v, str)}
        observe = self._observe

        if handler.unary_unary or handler.stream_unary:
            inner_unary: Any = handler.unary_unary or handler.stream_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                async with observe(method, carrier, context):
                    try:
                        return await inner_unary(request, context)
                    except RpcError as error:
                        await context.abort_with_status(error.to_status())
                    except Exception as error:  # the last line of defence
                        await context.abort_with_status(_unexpected(method, error).to_status())

            return replace_behaviour(handler, unary)

        inner_stream: Any = handler.unary_stream or handler.stream_stream

        async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            async with observe(method, carrier, context):
                try:
                    async for response in inner_stream(request, context):
                        yield response
                except RpcError as error:
                    await context.abort_with_status(error.to_status())
                except Exception as error:  # the last line of defence
                    await context.abort_with_status(_unexpected(method, error).to_status())

        return replace_behaviour(handler, streaming)

    def _observe(
        self, method: str, carrier: dict[str, str], context: grpc.aio.ServicerContext[Any, Any]
    ) -> _Observation:
        return _Observation(self._metrics, method, carrier, context)


class _Observation:
    """The async context around one RPC: span in, log line and metrics out."""

    def __init__(
        self,
        metrics: RpcMetrics,
        method: str,
        carrier: dict[str, str],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        self.metrics, self.method, self.carrier, self.context = metrics, method, carrier, context

    async def __aenter__(self) -> None:
        self.started = time.perf_counter()
        parent = propagate.extract(self.carrier, getter=_Metadata())  # type: ignore[arg-type]
        self.span_cm = _tracer.start_as_current_span(self.method, context=parent, kind=SpanKind.SERVER)
        self.span = self.span_cm.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        duration = time.perf_counter() - self.started
        code = _status_of(self.context, exc)
        self.metrics.requests.labels(self.method, code.name).inc()
        self.metrics.latency.labels(self.method).observe(duration)
        span_context = self.span.get_span_context()
        trace_id = format(span_context.trace_id, "032x") if span_context.is_valid else ""
        if code is not grpc.StatusCode.OK:
            self.span.set_status(Status(StatusCode.ERROR, code.name))
        self.span.set_attribute("rpc.grpc.status_code", code.value[0])
        _log.info(
            "rpc",
            method=self.method,
            status=code.name,
            duration_ms=round(duration * 1000, 3),
            peer=self.context.peer(),
            user_id=current_user_id.get(),
            trace_id=trace_id,
        )
        self.span_cm.__exit__(exc_type, exc, tb)


def _unexpected(method: str, error: Exception) -> RpcError:
    """Log an exception no domain code handled, with its traceback, and choose its status."""
    if isinstance(error, grpc.aio.AbortError):
        raise error  # context.abort() already set the status
    _log.error("unhandled exception", method=method, exc_info=error)
    return from_unexpected(error)


def replace_behaviour(
    handler: grpc.RpcMethodHandler[Any, Any], behaviour: Callable[..., Any]
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler with its behaviour wrapped."""
    kind = (
        "unary_unary"
        if handler.unary_unary
        else "stream_unary"
        if handler.stream_unary
        else "unary_stream"
        if handler.unary_stream
        else "stream_stream"
    )
    factory = getattr(grpc, f"{kind}_rpc_method_handler")
    wrapped: grpc.RpcMethodHandler[Any, Any] = factory(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
    return wrapped

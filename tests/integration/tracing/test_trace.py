"""One chat turn's trace in Jaeger: the client's traceparent through Envoy, the router, history
and Triton, each span the child of the one that called it.

The stack runs with tracing (`parley up --with tracing`): the fixture starts Jaeger, which
restarts every process that exports spans (the services, the indexer, Triton, Envoy) with its
OTLP endpoint.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from parley.chat.v1 import chat_pb2 as pb
from parley_core.stubs import chat_stub, session_stub
from parley_stack.testing import LocalStack
from tests.integration.router.helpers import turn_input
from tests.integration.session.helpers import register_verified

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def jaeger_query(local_stack: LocalStack) -> str:
    """The URL of Jaeger's query API, with the whole platform exporting its spans to it."""
    local_stack.ensure("jaeger")
    local_stack.ensure("envoy")  # and everything behind it, restarted to export spans
    return f"http://{local_stack.config.host}:{local_stack.config.port('jaeger_query')}"


@pytest.fixture(scope="module")
async def access_token(edge: str, local_stack: LocalStack) -> str:
    """A verified account's access token."""
    async with grpc.aio.insecure_channel(edge) as channel:
        registered = await register_verified(
            session_stub(channel),
            local_stack.config.data_dir("mailbox"),
            f"trace-{secrets.token_hex(5)}@parley.test",
        )
    return registered.credentials.access_token


@dataclass(frozen=True)
class Span:
    span_id: str
    parent_id: str  # "" for a root
    service: str
    operation: str
    tags: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.tags.get("span.kind", ""))


def _spans(trace: dict[str, Any]) -> list[Span]:
    """The spans of one trace of Jaeger's JSON API, with their service names."""
    processes = trace["processes"]
    spans = []
    for span in trace["spans"]:
        parents = [r["spanID"] for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
        spans.append(
            Span(
                span_id=span["spanID"],
                parent_id=parents[0] if parents else "",
                service=processes[span["processID"]]["serviceName"],
                operation=span["operationName"],
                tags={t["key"]: t["value"] for t in span.get("tags", [])},
            )
        )
    return spans


def _get(url: str) -> dict[str, Any] | None:
    """Jaeger's JSON answer, or None for 404 (a trace not stored yet)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            body: dict[str, Any] = json.load(reply)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise
    return body


def _get_trace(query: str, trace_id: str) -> list[Span]:
    body = _get(f"{query}/api/traces/{trace_id}")
    if body is None:
        return []
    [trace] = body["data"]
    return _spans(trace)


async def _trace_with(
    query: str, trace_id: str, client_span: str, services: set[str], timeout_s: float = 60.0
) -> list[Span]:
    """The trace once it holds spans of every one of services and every span's parent (or
    the client's span): each process exports in batches of its own, a second or so apart,
    so a trace fills in over time. Whatever it holds at the deadline otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        spans = await asyncio.to_thread(_get_trace, query, trace_id)
        ids = {s.span_id for s in spans} | {client_span}
        whole = services <= {s.service for s in spans} and all(s.parent_id in ids for s in spans)
        if whole or time.monotonic() > deadline:
            return spans
        await asyncio.sleep(1)


async def _turn(edge: str, access_token: str) -> tuple[str, str]:
    """One turn through Envoy under a client span of our own: (trace id, client span id)."""
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    metadata = (
        ("authorization", f"Bearer {access_token}"),
        ("traceparent", f"00-{trace_id}-{client_span}-01"),
    )
    async with grpc.aio.insecure_channel(edge) as channel:
        events = [
            response.event
            async for response in chat_stub(channel).StreamTurn(
                pb.StreamTurnRequest(input=turn_input("hello, tracer")), metadata=metadata, timeout=60
            )
        ]
    assert events[-1].WhichOneof("kind") == "completed"
    return trace_id, client_span


def _caller(spans: list[Span], span: Span) -> Span:
    [parent] = [s for s in spans if s.span_id == span.parent_id]
    return parent


def _stream_turn(spans: list[Span]) -> Span:
    [span] = [
        s for s in spans if s.service == "svc_router" and s.operation.endswith("ChatService/StreamTurn")
    ]
    return span


async def test_a_turn_through_the_edge_is_one_trace_across_the_services(
    edge: str, jaeger_query: str, access_token: str
) -> None:
    trace_id, client_span = await _turn(edge, access_token)

    expected = {"envoy", "svc_router", "svc_history", "svc_ledger"}
    spans = await _trace_with(jaeger_query, trace_id, client_span, expected)
    assert expected <= {span.service for span in spans}, sorted({span.service for span in spans})
    by_id = {span.span_id: span for span in spans}

    # Every span hangs off the client's span or another span of the trace: no orphan.
    assert all(span.parent_id == client_span or span.parent_id in by_id for span in spans), spans

    # The edge's span is the client's span's child; the router's StreamTurn is the edge's.
    stream_turn = _stream_turn(spans)
    assert _caller(spans, stream_turn).service == "envoy"
    assert _caller(spans, stream_turn).parent_id == client_span

    # History's work for the turn was called by the router: each history server span's
    # parent is the router's client span of the same method, inside StreamTurn.
    history_servers = [s for s in spans if s.service == "svc_history" and s.kind == "server"]
    assert history_servers
    for span in history_servers:
        client = _caller(spans, span)
        assert (client.service, client.kind, client.operation) == ("svc_router", "client", span.operation)
        assert _caller(spans, client) == stream_turn

    # History's writes for the turn show as Cassandra requests under its server spans, by
    # verb and table, with no values.
    history_ids = {s.span_id for s in history_servers}
    cql = [s for s in spans if s.service == "svc_history" and s.operation.startswith("cassandra ")]
    assert any(s.parent_id in history_ids for s in cql), sorted(s.operation for s in spans)
    for span in cql:
        assert (span.kind, span.tags["db.system"]) == ("client", "cassandra")
        assert span.operation.split()[1] == span.tags["db.operation.name"]

    # The router streamed the answer from Triton under a client span of its own.
    [model_call] = [s for s in spans if s.operation == "triton ModelStreamInfer"]
    assert (model_call.service, model_call.kind) == ("svc_router", "client")
    assert _caller(spans, model_call) == stream_turn

    # The ledger billed the turn's usage event under the span that published it.
    [billed] = [s for s in spans if s.service == "svc_ledger" and s.operation == "usage record"]
    assert billed.kind == "consumer"
    assert _caller(spans, billed) == stream_turn


def _streamed(spans: list[Span]) -> list[Span]:
    """Triton's request spans under the router's client span of the model stream."""
    calls = {s.span_id for s in spans if s.operation == "triton ModelStreamInfer"}
    return [s for s in spans if s.service == "triton" and s.parent_id in calls]


async def test_triton_s_spans_of_a_turn_are_children_of_the_router_s_model_call(
    edge: str, jaeger_query: str, access_token: str
) -> None:
    # Triton's exporter (OTLP/HTTP, batched) drops a batch it fails to send and never
    # retries; on a loaded machine one turn's spans can be lost. So: up to three turns.
    for _ in range(3):
        trace_id, client_span = await _turn(edge, access_token)
        spans = await _trace_with(jaeger_query, trace_id, client_span, {"envoy", "svc_router", "triton"}, 20)
        if _streamed(spans):
            break
    assert _streamed(spans), "three turns' traces got none of Triton's spans"
    [request] = _streamed(spans)
    assert request.operation == "InferRequest"
    assert _caller(spans, _caller(spans, request)) == _stream_turn(spans)
    # The model's own span is the request's child.
    assert "parley-scripted" in {s.operation for s in spans if s.parent_id == request.span_id}
    # Every Triton request of the turn (the answer, the router's token counts) hangs off one
    # of the router's spans.
    triton = [s for s in spans if s.service == "triton"]
    by_id = {span.span_id: span for span in spans}
    assert {by_id[s.parent_id].service for s in triton} == {"svc_router", "triton"}


async def test_a_request_without_trace_context_starts_its_trace_at_the_edge(
    edge: str, jaeger_query: str, access_token: str
) -> None:
    # The edge's span records the User-Agent: this one tells the request apart.
    agent = f"parley-trace-test/{secrets.token_hex(6)}"
    since_us = time.time_ns() // 1000 - 1_000_000
    async with grpc.aio.insecure_channel(edge, options=[("grpc.primary_user_agent", agent)]) as channel:
        await chat_stub(channel).ListModels(
            pb.ListModelsRequest(), metadata=(("authorization", f"Bearer {access_token}"),), timeout=10
        )

    spans = await _trace_by_agent(jaeger_query, agent, since_us)
    by_id = {span.span_id: span for span in spans}
    # Envoy's own span of the request (beside it: its client span of the rate limit check).
    [ingress] = [s for s in spans if s.service == "envoy" and s.kind == "server"]
    assert ingress.parent_id == ""  # a new trace, begun by Envoy
    [list_models] = [s for s in spans if s.service == "svc_router" and s.kind == "server"]
    assert list_models.operation == "/parley.chat.v1.ChatService/ListModels"
    assert by_id[list_models.parent_id] == ingress


async def _trace_by_agent(query: str, agent: str, since_us: int, timeout_s: float = 30.0) -> list[Span]:
    """The spans of the trace whose edge span carries this User-Agent, once the router's
    span has arrived too."""
    deadline = time.monotonic() + timeout_s
    url = f"{query}/api/traces?service=envoy&start={since_us}&limit=200"
    while True:
        body = await asyncio.to_thread(_get, url)
        for trace in (body or {}).get("data") or []:
            spans = _spans(trace)
            mine = any(agent in str(s.tags.get("user_agent", "")) for s in spans if s.service == "envoy")
            if mine and any(s.service == "svc_router" for s in spans):
                return spans
        assert time.monotonic() < deadline, f"no trace with user agent {agent} in Jaeger"
        await asyncio.sleep(1)

"""Runbook, "Read Envoy's admin interface": what /clusters, /stats/prometheus and /ready
say about the stack's edge, read the way the runbook reads them."""

from __future__ import annotations

import httpx
import pytest

from parley_stack.testing import LocalStack
from tests.integration.monitoring.helpers import person_at_edge, sample, turn_at_edge

pytestmark = pytest.mark.integration

SERVICES = ("svc_session", "svc_history", "svc_router", "svc_ledger")


@pytest.fixture(scope="module")
def admin(local_stack: LocalStack) -> str:
    local_stack.ensure("envoy")
    host, port = local_stack.endpoint("envoy", "admin")
    return f"http://{host}:{port}"


def test_clusters_lists_each_service_host_healthy_with_its_breaker_limits(
    admin: str, local_stack: LocalStack
) -> None:
    lines = httpx.get(f"{admin}/clusters", timeout=5).text.splitlines()
    for service in SERVICES:
        host, port = local_stack.endpoint(service, "grpc")
        assert f"{service}::{host}:{port}::health_flags::healthy" in lines
        assert f"{service}::default_priority::max_requests::4096" in lines


def test_clusters_as_json_names_every_service_cluster(admin: str) -> None:
    statuses = httpx.get(f"{admin}/clusters", params={"format": "json"}, timeout=5).json()["cluster_statuses"]
    names = {status["name"] for status in statuses}
    assert set(SERVICES) <= names


async def test_stats_count_a_turn_against_the_router_cluster_with_breakers_closed(
    admin: str, local_stack: LocalStack
) -> None:
    host, port = local_stack.endpoint("envoy", "public")
    edge = f"{host}:{port}"
    async with httpx.AsyncClient(base_url=admin, timeout=5) as client:
        before = (await client.get("/stats/prometheus")).text
        person = await person_at_edge(local_stack, edge)
        await turn_at_edge(edge, person, "count me [scripted ttft_ms=10]")
        stats = (await client.get("/stats/prometheus")).text
    before_total = sample(before, "envoy_cluster_upstream_rq_total", envoy_cluster_name="svc_router")
    assert (
        sample(stats, "envoy_cluster_upstream_rq_total", envoy_cluster_name="svc_router") == before_total + 1
    )
    for service in SERVICES:
        for gauge in ("cx_open", "rq_open", "rq_pending_open"):
            name = f"envoy_cluster_circuit_breakers_default_{gauge}"
            assert f'{name}{{envoy_cluster_name="{service}"}} 0' in stats


def test_ready_says_live(admin: str) -> None:
    reply = httpx.get(f"{admin}/ready", timeout=5)
    assert (reply.status_code, reply.text.strip()) == (200, "LIVE")

"""The edge's internal listener: Envoy's view of each cluster for svc_ledger, and Envoy's own
metrics for Prometheus, while the admin interface behind it stays out of reach."""

from __future__ import annotations

import httpx
import pytest

from parley_stack.testing import LocalStack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def internal(local_stack: LocalStack) -> str:
    local_stack.ensure("envoy")
    return f"http://{local_stack.config.host}:{local_stack.config.port('envoy_internal')}"


def test_prometheus_reads_envoys_metrics_there(internal: str) -> None:
    reply = httpx.get(f"{internal}/stats/prometheus", timeout=5)

    assert reply.status_code == 200
    assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="svc_router"}' in reply.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/stats/prometheus"),
        ("GET", "/stats"),
        ("GET", "/clusters"),
        ("GET", "/config_dump"),
        ("POST", "/quitquitquit"),
        ("POST", "/healthcheck/fail"),
        ("POST", "/drain_listeners"),
        ("GET", "/stats/prometheus/../../config_dump"),
    ],
)
def test_no_other_part_of_the_admin_interface_is_reachable(internal: str, method: str, path: str) -> None:
    reply = httpx.request(method, f"{internal}{path}", timeout=5)

    assert reply.status_code == 404, reply.text[:200]

"""The Pulsar and Weaviate charts' values (k8s/charts) against what the services are told
(k8s/base/config/*.env): the ports and names they dial are the ones the charts serve, and
nothing is exposed or started that Parley does not use.

The charts themselves are not rendered here (no helm or chart sources offline); their
defaults are stated where a value overrides one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from parley_stack.config import REPO_ROOT

CHARTS = REPO_ROOT / "k8s" / "charts"
CONFIG = REPO_ROOT / "k8s" / "base" / "config"


def _values(chart: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHARTS / chart / "values-production.yaml").read_text())
    return loaded


def _environment() -> dict[str, str]:
    """Every service's settings from its env file (KEY=value lines)."""
    found: dict[str, str] = {}
    for path in sorted(CONFIG.glob("*.env")):
        for line in Path(path).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                found[key.strip()] = value.strip()
    return found


def test_pulsar_clients_and_the_ledgers_admin_probe_dial_the_proxys_ports() -> None:
    proxy = _values("pulsar")["proxy"]
    environment = _environment()
    brokers = {key: urlsplit(url) for key, url in environment.items() if key.endswith("_PULSAR_URL")}
    admin = urlsplit(environment["PARLEY_LEDGER_HEALTH__PULSAR_ADMIN_URL"])

    assert len(brokers) == 4, brokers  # the four services publish or consume
    for key, url in brokers.items():
        assert (url.scheme, url.hostname, url.port) == (
            "pulsar",
            "pulsar-proxy.parley.svc.cluster.local",
            proxy["ports"]["pulsar"],
        ), key
    # The chart's default Service port for the proxy's HTTP (admin) API is 80.
    assert (admin.scheme, admin.hostname, admin.port) == (
        "http",
        "pulsar-proxy.parley.svc.cluster.local",
        proxy["ports"]["http"],
    )


def test_pulsar_runs_nothing_parley_does_not_use_and_is_not_exposed() -> None:
    values = _values("pulsar")

    assert values["namespace"] == "parley"
    assert values["proxy"]["service"]["type"] == "ClusterIP"  # the chart's default: LoadBalancer
    # Defaults that would start what Parley does not use: the functions worker (it needs
    # the Kubernetes API), the chart's own Prometheus and Grafana, the manager UI.
    assert values["components"]["functions"] is False
    assert values["kube-prometheus-stack"]["enabled"] is False
    assert values["components"]["pulsar_manager"] is False
    broker = values["broker"]["configData"]
    assert int(broker["managedLedgerDefaultAckQuorum"]) <= int(broker["managedLedgerDefaultWriteQuorum"])
    assert int(broker["managedLedgerDefaultWriteQuorum"]) <= values["bookkeeper"]["replicaCount"]


def test_weaviate_is_dialled_on_the_ports_it_serves_and_is_not_exposed() -> None:
    values = _values("weaviate")
    environment = _environment()

    assert values["service"]["type"] == "ClusterIP"
    assert values["grpcService"]["enabled"] is True
    assert values["grpcService"]["type"] == "ClusterIP"
    assert values["env"]["DEFAULT_VECTORIZER_MODULE"] == "none"  # Parley sends its own vectors
    # The headless Service resolves to the pods, which serve HTTP on 8080 and gRPC on 50051.
    assert environment["PARLEY_HISTORY_SEARCH__WEAVIATE_HOST"] == "weaviate-headless.parley.svc.cluster.local"
    assert environment["PARLEY_HISTORY_SEARCH__WEAVIATE_HTTP_PORT"] == "8080"
    assert environment["PARLEY_HISTORY_SEARCH__WEAVIATE_GRPC_PORT"] == "50051"

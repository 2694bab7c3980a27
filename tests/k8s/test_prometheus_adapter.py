"""The Prometheus adapter's rule serves the router's HPA the gauge the router exports.

k8s/monitoring/prometheus-adapter.yaml is applied to the test API server (a ConfigMap in
the monitoring namespace); its config.yaml is JSON (YAML too) and read here. The metric
names come from where they live: the router's registry (svc_router/engine.py) and the HPA
the API server accepted (k8s/base/svc-router.yaml), never spelled out in this test.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from parley_stack.config import REPO_ROOT
from svc_router.engine import _Metrics
from tests.k8s.conftest import Cluster

Obj = dict[str, Any]

ADAPTER = REPO_ROOT / "k8s" / "monitoring" / "prometheus-adapter.yaml"
_SERIES_QUERY = re.compile(r"^(?P<name>[A-Za-z_:][\w:]*)\{(?P<matchers>[^}]*)\}$")


@pytest.fixture(scope="module")
def rules(cluster: Cluster) -> list[Obj]:
    [config_map] = cluster.accepted(ADAPTER.read_text())
    assert (config_map["kind"], config_map["metadata"]["namespace"]) == ("ConfigMap", "monitoring")
    config = json.loads(config_map["data"]["config.yaml"])
    assert set(config) == {"rules"}
    found: list[Obj] = config["rules"]
    return found


@pytest.fixture(scope="module")
def router_hpa_metric(accepted: dict[str, list[Obj]]) -> str:
    names = set()
    for objects in accepted.values():
        [hpa] = [
            o
            for o in objects
            if o["kind"] == "HorizontalPodAutoscaler" and o["metadata"]["name"] == "svc-router"
        ]
        [metric] = hpa["spec"]["metrics"]
        assert metric["type"] == "Pods"
        assert metric["pods"]["target"]["type"] == "AverageValue"
        names.add(metric["pods"]["metric"]["name"])
    [name] = names
    return str(name)


def _router_gauges() -> set[str]:
    registry = CollectorRegistry()
    _Metrics(registry)
    return {family.name for family in registry.collect() if family.type == "gauge"}


def _exposed_name(rule: Obj, series: str) -> str:
    """The adapter's naming: `matches` (default .*) must match; `as` defaults to $0 (or $1
    with one capture group) and may use $N / ${N}."""
    naming = rule.get("name", {})
    pattern = re.compile(naming.get("matches") or ".*")
    found = pattern.search(series)
    assert found, f"{pattern.pattern} does not match {series}"
    template = naming.get("as") or ("$1" if pattern.groups == 1 else "$0")
    return re.sub(r"\$\{?(\d+)\}?", lambda m: found.group(int(m.group(1))) or "", template)


def _series(rule: Obj) -> tuple[str, set[str]]:
    found = _SERIES_QUERY.match(rule["seriesQuery"])
    assert found, rule["seriesQuery"]
    return found["name"], {m.strip() for m in found["matchers"].split(",")}


def test_the_series_query_reads_a_gauge_the_router_registers(rules: list[Obj]) -> None:
    [rule] = rules
    name, matchers = _series(rule)
    assert name in _router_gauges()
    # Only series Prometheus labelled with their pod and namespace can be served per pod.
    assert matchers == {'namespace!=""', 'pod!=""'}


def test_the_rule_exposes_the_metric_the_router_hpa_reads(rules: list[Obj], router_hpa_metric: str) -> None:
    exposed = [_exposed_name(rule, _series(rule)[0]) for rule in rules]
    assert exposed == [router_hpa_metric]


def test_the_namespace_and_pod_labels_name_their_resources(rules: list[Obj]) -> None:
    [rule] = rules
    assert rule["resources"] == {
        "overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    }


def test_the_metrics_query_gives_one_value_per_requested_pod(rules: list[Obj]) -> None:
    """The adapter fills the template (Go, << >> delimiters) with the series, the requested
    pods' matchers and the label to group by (docs/config.md, "Querying")."""
    [rule] = rules
    name, _ = _series(rule)
    query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", name)
        .replace("<<.LabelMatchers>>", 'pod=~"r-1|r-2",namespace="parley"')
        .replace("<<.GroupBy>>", "pod")
    )
    assert "<<" not in query
    assert query == f'max by (pod) ({name}{{pod=~"r-1|r-2",namespace="parley"}})'

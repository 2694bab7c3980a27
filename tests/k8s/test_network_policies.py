"""The NetworkPolicies allow every connection Parley's configuration makes, and no other.

The flows come from the workloads' own configuration (tests/k8s/flows.py: the services'
Settings classes over the rendered environment, Envoy's rendered clusters); the verdicts
from tests/k8s/policies.py's evaluator over the policies the API server accepted. The dev
overlay is the one with every Secret (its Redis URLs); both overlays share the policies.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.k8s import policies
from tests.k8s.flows import INTERNET, KUBE_DNS, KUBE_SYSTEM_OTHER, NAMESPACES, PROMETHEUS, STORE_PODS, Network
from tests.k8s.policies import Flow, Pod

Obj = dict[str, Any]

WORKLOADS = [
    "envoy",
    "svc-session",
    "svc-history",
    "svc-history-indexer",
    "svc-router",
    "svc-ledger",
    "web",
    "triton",
    "otel-collector",
]

#: The workloads that export spans: their settings' otlp_endpoint names the collector.
TRACED = ["svc-session", "svc-history", "svc-history-indexer", "svc-router", "svc-ledger"]


@pytest.fixture(scope="module")
def network(accepted: dict[str, list[Obj]]) -> Network:
    return Network(accepted["dev"])


def _refusals(network: Network, flow: Flow) -> list[str]:
    return policies.flow_refusals(network.objects, flow, NAMESPACES)


def test_the_workloads_are_the_deployments(network: Network) -> None:
    assert sorted(network.deployments) == sorted(WORKLOADS)


def test_both_overlays_carry_the_same_network_policies(accepted: dict[str, list[Obj]]) -> None:
    def policy_specs(objects: list[Obj]) -> dict[str, Obj]:
        return {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "NetworkPolicy"}

    assert policy_specs(accepted["dev"]) == policy_specs(accepted["production"])


def test_every_pod_is_isolated_for_ingress_and_egress(network: Network) -> None:
    isolated = [
        (o["spec"]["podSelector"], o["spec"]["policyTypes"])
        for o in network.objects
        if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].startswith("default-deny-")
    ]
    assert sorted(isolated, key=str) == [({}, ["Egress"]), ({}, ["Ingress"])]


def test_the_flows_read_from_the_configuration_are_the_ones_each_workload_makes(network: Network) -> None:
    """What the derivation finds, spelled out: a setting renamed or dropped shows up here."""
    found = {w: {f"{f.destination.name}:{f.port}" for f in network.flows(w)} for w in WORKLOADS}
    stores = {"cassandra:9042", "redis-primary:6379", "pulsar-proxy:6650"}
    spans = "otel-collector:4317"
    assert found == {
        "envoy": {
            "svc-session:50051", "svc-session:8082", "svc-session:50052", "svc-history:50051",
            "svc-router:50051", "svc-ledger:50051", "web:8080", spans,
        },
        "svc-session": {*stores, spans},
        "svc-history": {
            *stores, "svc-session:8082", "weaviate:8080", "weaviate:50051", "triton:8001", spans,
        },
        "svc-history-indexer": {
            "cassandra:9042", "pulsar-proxy:6650", "weaviate:8080", "weaviate:50051", "triton:8001", spans,
        },
        "svc-router": {
            *stores, "svc-session:50052", "svc-session:8082", "svc-history:50051", "triton:8001", spans,
        },
        "svc-ledger": {
            *stores, "pulsar-proxy:8080", "svc-session:8082", "svc-session:50051", "svc-history:50051",
            "svc-router:50051", "svc-ledger:50051", "svc-history-indexer:9464", "envoy:8081", "triton:8000",
            spans,
        },
        "web": set(),
        "triton": set(),
        # Its replicas (spans routed by trace id) and the trace backend.
        "otel-collector": {"otel-collector:4319", "jaeger-collector:4317"},
    }  # fmt: skip


@pytest.mark.parametrize("workload", WORKLOADS)
def test_every_flow_a_workload_is_configured_for_is_allowed_at_both_ends(
    network: Network, workload: str
) -> None:
    assert [refusal for flow in network.flows(workload) for refusal in _refusals(network, flow)] == []


@pytest.mark.parametrize(
    ("source", "destination", "port"),
    [
        ("svc-router", "weaviate", 8080),  # search is svc_history's
        ("svc-router", "pulsar-broker", 6650),  # Pulsar only through its proxy
        ("svc-session", "triton", 8001),
        ("svc-session", "svc-history", 50051),
        ("svc-history-indexer", "redis-primary", 6379),  # the indexer opens no Redis
        ("svc-history-indexer", "svc-session", 8082),
        ("svc-ledger", "weaviate", 8080),
        ("envoy", "cassandra", 9042),
        ("envoy", "triton", 8001),
        ("envoy", "svc-history-indexer", 9464),
        ("web", "svc-session", 50051),
        ("web", "envoy", 8080),
        ("triton", "redis-primary", 6379),
        ("triton", "svc-router", 50051),
        ("cassandra", "redis-primary", 6379),
        ("weaviate", "triton", 8001),
        ("web", "otel-collector", 4317),
        ("triton", "otel-collector", 4317),
        ("svc-router", "otel-collector", 4319),  # the routed port is the replicas' own
        ("otel-collector", "svc-history", 50051),
        ("otel-collector", "otel-collector", 4317),
    ],
)
def test_a_flow_no_configuration_names_is_refused_by_its_source(
    network: Network, source: str, destination: str, port: int
) -> None:
    flow = Flow(network.pod(source), network.pod(destination), port)
    assert f"{flow}: no egress rule of {source} allows it" in _refusals(network, flow)


def test_every_workload_whose_settings_name_an_otlp_endpoint_reaches_the_collector_and_nothing_else_can(
    network: Network,
) -> None:
    exporting = {
        workload: [e for e in network.endpoints(workload) if e.setting == "otlp_endpoint"]
        for workload in WORKLOADS
    }
    assert sorted(w for w, found in exporting.items() if found) == sorted(TRACED)
    collector = network.pod("otel-collector")
    for workload in TRACED:
        [endpoint] = exporting[workload]
        assert network.resolve(endpoint) == [(collector, 4317)]
        assert _refusals(network, Flow(network.pod(workload), collector, 4317)) == []
    # Envoy exports through a cluster of its rendered config, not a setting.
    edge_spans = [e for e in network.endpoints("envoy") if network.resolve(e) == [(collector, 4317)]]
    assert len(edge_spans) == 1, edge_spans
    assert _refusals(network, Flow(network.pod("envoy"), collector, 4317)) == []
    # Everything else is refused at the collector itself (its ingress), whatever its egress.
    for pod in network.pods:
        if pod.name in TRACED or pod.name == "envoy":
            continue
        for port in (4317, 4319):
            flow = Flow(pod, collector, port)
            if pod is collector and port == 4319:
                assert _refusals(network, flow) == []  # the replicas route spans to each other
                continue
            assert f"{flow}: no ingress rule of otel-collector allows it" in _refusals(network, flow)


def test_the_collector_reaches_the_trace_backend_only_on_its_otlp_port(network: Network) -> None:
    collector = network.pod("otel-collector")
    backend = network.pod("jaeger-collector")
    assert _refusals(network, Flow(collector, backend, 4317)) == []
    assert _refusals(network, Flow(collector, backend, 16686)) != []  # Jaeger's UI/query port
    assert _refusals(network, Flow(collector, PROMETHEUS, 9090)) != []


@pytest.mark.parametrize("source", [*WORKLOADS, "cassandra", "redis-primary", "pulsar-broker", "weaviate"])
def test_nothing_in_parley_reaches_outside_the_cluster(network: Network, source: str) -> None:
    flow = Flow(network.pod(source), INTERNET, 443)
    assert _refusals(network, flow) == [f"{flow}: no egress rule of {source} allows it"]


@pytest.mark.parametrize("source", [*WORKLOADS, *(pod.name for pod in STORE_PODS)])
def test_every_pod_may_ask_the_cluster_dns_and_nothing_else_in_kube_system(
    network: Network, source: str
) -> None:
    pod = network.pod(source)
    assert _refusals(network, Flow(pod, KUBE_DNS, 53, "UDP")) == []
    assert _refusals(network, Flow(pod, KUBE_DNS, 53, "TCP")) == []
    assert _refusals(network, Flow(pod, KUBE_DNS, 9153)) != []
    assert _refusals(network, Flow(pod, KUBE_SYSTEM_OTHER, 53, "UDP")) != []


@pytest.mark.parametrize(
    ("source", "destination", "port"),
    [
        ("cassandra", "cassandra", 7000),
        ("redis-replica", "redis-primary", 6379),
        ("redis-sentinel", "redis-primary", 6379),
        ("redis-sentinel", "redis-sentinel", 26379),
        ("pulsar-proxy", "pulsar-broker", 6650),
        ("pulsar-proxy", "pulsar-broker", 8080),
        ("pulsar-broker", "pulsar-bookie", 3181),
        ("pulsar-broker", "pulsar-zookeeper", 2181),
        ("pulsar-bookie", "pulsar-zookeeper", 2181),
        ("weaviate", "weaviate", 7001),
        ("weaviate", "weaviate", 8300),
    ],
)
def test_a_store_reaches_its_own_members(network: Network, source: str, destination: str, port: int) -> None:
    assert _refusals(network, Flow(network.pod(source), network.pod(destination), port)) == []


@pytest.mark.parametrize("workload", [w for w in WORKLOADS if w != "web"])  # nginx serves no metrics
def test_prometheus_reads_every_workloads_metrics(network: Network, workload: str) -> None:
    pod = network.pod(workload)
    port = pod.ports["internal" if workload == "envoy" else "metrics"]
    assert _refusals(network, Flow(PROMETHEUS, pod, port)) == []


# The evaluator itself, on policies written here -------------------------------------------

_A = Pod("a", "ns", {"app": "a"}, {"grpc": 50051})
_B = Pod("b", "ns", {"app": "b"}, {"grpc": 50051})
_OTHER_B = Pod("b", "other", {"app": "b"}, {"grpc": 50051})
_SPACES = {"ns": {"kubernetes.io/metadata.name": "ns"}, "other": {"kubernetes.io/metadata.name": "other"}}


def _egress(*rules: Obj) -> Obj:
    return {
        "kind": "NetworkPolicy",
        "metadata": {"name": "a", "namespace": "ns"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "a"}},
            "policyTypes": ["Egress"],
            "egress": list(rules),
        },
    }


def test_a_pod_no_policy_isolates_may_connect_anywhere() -> None:
    assert policies.flow_refusals([], Flow(_A, INTERNET, 443), _SPACES) == []


def test_a_peer_with_a_namespace_and_a_pod_selector_needs_both() -> None:
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "other"}}, "podSelector": {}}
    both = [_egress({"to": [peer]})]
    assert policies.flow_refusals(both, Flow(_A, _OTHER_B, 50051), _SPACES) == []
    assert policies.flow_refusals(both, Flow(_A, _B, 50051), _SPACES) != []
    # A podSelector on its own means the policy's namespace only.
    alone = [_egress({"to": [{"podSelector": {"matchLabels": {"app": "b"}}}]})]
    assert policies.flow_refusals(alone, Flow(_A, _B, 50051), _SPACES) == []
    assert policies.flow_refusals(alone, Flow(_A, _OTHER_B, 50051), _SPACES) != []


def test_a_named_port_is_the_destinations_and_a_protocol_must_match() -> None:
    named = [_egress({"ports": [{"protocol": "TCP", "port": "grpc"}]})]
    assert policies.flow_refusals(named, Flow(_A, _B, 50051), _SPACES) == []
    assert policies.flow_refusals(named, Flow(_A, _B, 50052), _SPACES) != []
    assert policies.flow_refusals(named, Flow(_A, _B, 50051, "UDP"), _SPACES) != []


def test_an_ip_block_matches_its_cidr_less_its_exceptions() -> None:
    rules = [_egress({"to": [{"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.10/32"]}}]})]
    assert policies.flow_refusals(rules, Flow(_A, Pod("near", None, ip="203.0.113.11"), 443), _SPACES) == []
    assert policies.flow_refusals(rules, Flow(_A, INTERNET, 443), _SPACES) != []


def test_an_ingress_policy_refuses_at_the_destination() -> None:
    ingress = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "b", "namespace": "ns"},
        "spec": {"podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Ingress"], "ingress": []},
    }
    flow = Flow(_A, _B, 50051)
    assert policies.flow_refusals([ingress], flow, _SPACES) == [f"{flow}: no ingress rule of b allows it"]

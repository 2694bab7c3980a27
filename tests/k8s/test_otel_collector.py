"""The OpenTelemetry Collector in k8s/base: accepted by the API server, a configuration whose
pipelines hold together, sampling before anything reaches the backend, and every traced
workload pointed at it (docs/adr/0020-tracing.md, "Production").

The objects are the ones a real kube-apiserver accepted in a server-side dry run of each
overlay (conftest's `accepted`); the configuration is the ConfigMap the pods mount.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.k8s import policies
from tests.k8s.conftest import OVERLAYS
from tests.k8s.flows import Network

Obj = dict[str, Any]

COLLECTOR = "otel-collector"
#: What the services dial: the collector Service's DNS name and its OTLP/gRPC port.
COLLECTOR_ENDPOINT = "otel-collector.parley.svc.cluster.local:4317"
#: Each traced workload and its settings' prefix (the indexer reads svc_history's);
#: test_network_policies.py checks that the Settings classes read the variable.
TRACED = {
    "svc-session": "PARLEY_SESSION_",
    "svc-history": "PARLEY_HISTORY_",
    "svc-history-indexer": "PARLEY_HISTORY_",
    "svc-router": "PARLEY_ROUTER_",
    "svc-ledger": "PARLEY_LEDGER_",
}
_SECTIONS = ("receivers", "processors", "exporters")


def _objects(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _collector_objects(objects: list[Obj]) -> list[Obj]:
    return [
        o
        for o in objects
        if o["metadata"]["name"].startswith(COLLECTOR)
        and o["kind"] != "NetworkPolicy"
        and o["metadata"].get("namespace") == "parley"
    ]


@pytest.fixture(scope="module")
def network(accepted: dict[str, list[Obj]]) -> Network:
    return Network(accepted["dev"])


@pytest.fixture(scope="module")
def config(network: Network) -> Obj:
    return network.collector_config()


@pytest.fixture(scope="module")
def container(network: Network) -> Obj:
    found: list[Obj] = network.deployments[COLLECTOR]["spec"]["template"]["spec"]["containers"]
    assert len(found) == 1
    return found[0]


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_collector_is_accepted_in_every_overlay_and_keeps_every_policy(
    accepted: dict[str, list[Obj]], overlay: str
) -> None:
    objects = _collector_objects(accepted[overlay])
    found = sorted((o["kind"], re.sub(r"-[a-z0-9]{10}$", "-<hash>", o["metadata"]["name"])) for o in objects)
    assert found == [
        ("ConfigMap", "otel-collector-config-<hash>"),
        ("Deployment", "otel-collector"),
        ("HorizontalPodAutoscaler", "otel-collector"),
        ("PodDisruptionBudget", "otel-collector"),
        ("Service", "otel-collector"),
        ("Service", "otel-collector-peers"),
        ("ServiceAccount", "otel-collector"),
    ]
    assert policies.all_violations(objects) == []


def test_production_runs_the_collector_on_a_pinned_contrib_image(accepted: dict[str, list[Obj]]) -> None:
    deployment = _objects(accepted["production"], "Deployment")[COLLECTOR]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(r"otel/opentelemetry-collector-contrib:\d+\.\d+\.\d+", container["image"])
    assert deployment["spec"]["replicas"] >= 2


def test_the_config_parses_and_its_pipelines_use_only_what_it_defines(config: Obj) -> None:
    pipelines = config["service"]["pipelines"]
    assert pipelines, "no pipeline"
    undefined = [
        f"{name}: {section} {component}"
        for name, pipeline in pipelines.items()
        for section in _SECTIONS
        for component in pipeline.get(section, [])
        if component not in config.get(section, {})
    ]
    assert undefined == []
    assert [e for e in config["service"].get("extensions", []) if e not in config.get("extensions", {})] == []
    # Every component defined is used (a typo in a pipeline would leave one unused).
    unused = [
        f"{section} {component}"
        for section in _SECTIONS
        for component in config.get(section, {})
        if not any(component in pipeline.get(section, []) for pipeline in pipelines.values())
    ]
    assert unused == []
    assert all(name.split("/")[0] == "traces" for name in pipelines)


def test_every_pipeline_starts_with_the_memory_limiter(config: Obj) -> None:
    assert {name: p["processors"][0] for name, p in config["service"]["pipelines"].items()} == {
        name: "memory_limiter" for name in config["service"]["pipelines"]
    }


def test_only_tail_sampled_traces_reach_the_backend_keeping_errors_and_a_share_of_the_rest(
    config: Obj,
) -> None:
    pipelines = config["service"]["pipelines"]
    to_backend = {name: p for name, p in pipelines.items() if "otlp/backend" in p["exporters"]}
    assert list(to_backend) == ["traces/sampling"]
    assert to_backend["traces/sampling"]["processors"][:2] == ["memory_limiter", "tail_sampling"]
    policies_by_type = {p["type"]: p for p in config["processors"]["tail_sampling"]["policies"]}
    assert sorted(policies_by_type) == ["probabilistic", "status_code"]
    assert policies_by_type["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    assert 0 < policies_by_type["probabilistic"]["probabilistic"]["sampling_percentage"] < 100


def test_the_services_spans_reach_the_sampler_routed_by_trace_id(
    accepted: dict[str, list[Obj]], config: Obj, container: Obj
) -> None:
    """Tail sampling decides on whole traces: the replica that owns a trace id gets all of
    its spans, whichever replica a service's exporter is connected to."""
    pipelines = config["service"]["pipelines"]
    assert pipelines["traces"]["receivers"] == ["otlp"]
    assert pipelines["traces"]["exporters"] == ["loadbalancing"]
    assert pipelines["traces/sampling"]["receivers"] == ["otlp/routed"]
    balancer = config["exporters"]["loadbalancing"]
    assert balancer["routing_key"] == "traceID"
    dns = balancer["resolver"]["dns"]
    peers = _objects(accepted["dev"], "Service")["otel-collector-peers"]
    assert dns["hostname"] == "otel-collector-peers.parley.svc.cluster.local"
    assert peers["spec"]["clusterIP"] == "None"  # DNS answers with every ready replica
    assert [p["port"] for p in peers["spec"]["ports"]] == [int(dns["port"])]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert _port(config["receivers"]["otlp/routed"]["protocols"]["grpc"]["endpoint"]) == int(dns["port"])
    assert ports["otlp-routed"] == int(dns["port"])


def test_the_backend_is_the_deployments_setting_with_jaeger_as_its_default(
    config: Obj, container: Obj
) -> None:
    assert config["exporters"]["otlp/backend"]["endpoint"] == "${env:TRACES_BACKEND_ENDPOINT}"
    # First: docs/ops/monitoring.md's overlay patch replaces env/0.
    assert container["env"][0] == {
        "name": "TRACES_BACKEND_ENDPOINT",
        "value": "jaeger-collector.monitoring.svc.cluster.local:4317",
    }


@pytest.mark.parametrize("workload", sorted(TRACED))
def test_every_traced_workload_exports_to_the_collector_service(network: Network, workload: str) -> None:
    prefix = TRACED[workload]
    env = network.environment(workload)
    assert env[f"{prefix}OTLP_ENDPOINT"] == COLLECTOR_ENDPOINT
    service = _objects(network.objects, "Service")[COLLECTOR]
    host, port = COLLECTOR_ENDPOINT.rsplit(":", 1)
    assert host == f"{COLLECTOR}.{service['metadata']['namespace']}.svc.cluster.local"
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]
    # Head sampling stays the SDK's default (parent-based, always on): the collector samples
    # whole traces, so no process may drop spans before it (docs/adr/0020-tracing.md).
    assert [key for key in env if key.startswith("OTEL_")] == []


def test_the_deployments_ports_match_its_services_and_its_config(
    network: Network, config: Obj, container: Obj
) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    services = {
        name: s for name, s in _objects(network.objects, "Service").items() if name.startswith(COLLECTOR)
    }
    assert sorted(services) == ["otel-collector", "otel-collector-peers"]
    for service in services.values():
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{service['metadata']['name']}: no container port {port}"
            assert ports[port["targetPort"]] == port["port"]
    # What the collector listens on is what the pod declares.
    assert ports["otlp-grpc"] == _port(config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"])
    assert ports["health"] == _port(config["extensions"]["health_check"]["endpoint"])
    [reader] = config["service"]["telemetry"]["metrics"]["readers"]
    assert ports["metrics"] == reader["pull"]["exporter"]["prometheus"]["port"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "health"
    # The pods mount the generated ConfigMap the config was read from, where args point.
    [volume] = network.deployments[COLLECTOR]["spec"]["template"]["spec"]["volumes"]
    [mount] = container["volumeMounts"]
    assert mount["name"] == volume["name"]
    assert container["args"] == [f"--config={mount['mountPath']}/config.yaml"]

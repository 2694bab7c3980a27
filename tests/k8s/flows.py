"""The connections each Parley workload makes, read from what configures it, and the pods at
both ends, for tests/k8s/policies.py's NetworkPolicy evaluator.

A service's flows come from its own Settings class (the one it builds at start-up) filled
from the rendered Deployment's environment (its ConfigMap and Secret): every setting that
names a `<service>.<namespace>.svc.cluster.local` host, with the port in the value or in
the sibling `*_port` settings (cassandra_hosts + cassandra_port). An environment variable
the class ignores is no flow. Envoy's come from the clusters of its rendered config, the
OpenTelemetry Collector's from the exporters of its rendered config (`${env:...}` filled
in from its container's environment). Hosts resolve through the rendered Services, or the
Services the operators and charts create (STORE_SERVICES), to the pods behind them.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic_settings import BaseSettings

from svc_history.settings import HistorySettings
from svc_ledger.settings import LedgerSettings
from svc_router.settings import RouterSettings
from svc_session.settings import SessionSettings
from tests.k8s.policies import Flow, Obj, Pod

#: Each namespace's labels, as the API server sets them (namespaceSelectors match these).
NAMESPACES: dict[str, dict[str, str]] = {
    name: {"kubernetes.io/metadata.name": name}
    for name in ("parley", "kube-system", "monitoring", "cass-operator", "redis-operator")
}

_PULSAR = {"app": "pulsar", "release": "pulsar", "cluster": "pulsar"}
_REDIS = {"app.kubernetes.io/component": "redis", "app.kubernetes.io/part-of": "parley"}
_REPLICATION = {**_REDIS, "app": "redis", "redis_setup_type": "replication", "role": "replication"}

#: Pods the operators and charts run in Parley's namespace, with the labels they give them
#: (cass-operator; OT-CONTAINER-KIT redis-operator, which copies the custom resource's labels
#: and marks the primary redis-role=master; apache/pulsar-helm-chart; weaviate-helm) and
#: their ports.
STORE_PODS = [
    Pod(
        "cassandra",
        "parley",
        {"cassandra.datastax.com/cluster": "parley", "cassandra.datastax.com/datacenter": "dc1"},
        {"native": 9042, "internode": 7000, "tls-internode": 7001, "mgmt-api-http": 8080},
    ),
    Pod("redis-primary", "parley", {**_REPLICATION, "redis-role": "master"}, {"redis-client": 6379}),
    Pod("redis-replica", "parley", {**_REPLICATION, "redis-role": "slave"}, {"redis-client": 6379}),
    Pod(
        "redis-sentinel",
        "parley",
        {**_REDIS, "app": "redis-sentinel", "redis_setup_type": "sentinel", "role": "sentinel"},
        {"sentinel-client": 26379},
    ),
    Pod("pulsar-proxy", "parley", {**_PULSAR, "component": "proxy"}, {"sts-http": 8080, "sts-pulsar": 6650}),
    Pod("pulsar-broker", "parley", {**_PULSAR, "component": "broker"}, {"http": 8080, "pulsar": 6650}),
    Pod("pulsar-bookie", "parley", {**_PULSAR, "component": "bookie"}, {"bookie": 3181}),
    Pod(
        "pulsar-zookeeper", "parley", {**_PULSAR, "component": "zookeeper"}, {"client": 2181, "leader": 2888}
    ),
    Pod(
        "weaviate",
        "parley",
        {"app": "weaviate"},
        {"http": 8080, "grpc": 50051, "gossip": 7000, "data": 7001, "raft": 8300, "raft-rpc": 8301},
    ),
]
KUBE_DNS = Pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, {"dns": 53, "dns-tcp": 53})
KUBE_SYSTEM_OTHER = Pod("metrics-server", "kube-system", {"k8s-app": "metrics-server"}, {"https": 10250})
PROMETHEUS = Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
#: The trace backend the collector exports to by default (jaeger-collector.monitoring:4317,
#: its OTLP/gRPC receiver): operators run it; its labels here are a stand-in.
TRACE_BACKEND = Pod(
    "jaeger-collector", "monitoring", {"app.kubernetes.io/name": "jaeger"}, {"otlp-grpc": 4317}
)
INTERNET = Pod("internet", None, ip="203.0.113.10")


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    selector: Mapping[str, str]
    #: Headless: DNS answers with the pods' addresses, the client dials the pods' ports.
    headless: bool
    #: Service port -> target port (a number or the pod's port name); unused when headless.
    ports: Mapping[int, int | str]


#: The Services the operators and charts create, by the names the settings use.
STORE_SERVICES = [
    # redis-operator: <RedisReplication>-master selects the current primary.
    Service("parley", "redis-master", {"app": "redis", "redis-role": "master"}, False, {6379: 6379}),
    # cass-operator: <clusterName>-<datacenter>-service, headless.
    Service(
        "parley",
        "parley-dc1-service",
        {"cassandra.datastax.com/cluster": "parley", "cassandra.datastax.com/datacenter": "dc1"},
        True,
        {},
    ),
    # The Pulsar chart's proxy, with the ports the services' settings name (6650, 8080); the
    # chart's proxy.ports must give the admin API's Service port as 8080.
    Service(
        "parley",
        "pulsar-proxy",
        {"app": "pulsar", "release": "pulsar", "component": "proxy"},
        False,
        {6650: "sts-pulsar", 8080: "sts-http"},
    ),
    Service("parley", "weaviate-headless", {"app": "weaviate"}, True, {}),
    Service(
        "monitoring", "jaeger-collector", {"app.kubernetes.io/name": "jaeger"}, False, {4317: "otlp-grpc"}
    ),
]

#: The Settings class each workload builds from its environment, and (for a process that
#: uses only part of it) the top-level settings it opens connections from: the indexer
#: shares svc_history's settings but connects to Cassandra, Pulsar, Triton and Weaviate
#: only (svc_history/search/app.py), and exports its spans (run_until_signal).
SETTINGS: dict[str, tuple[type[BaseSettings], frozenset[str] | None]] = {
    "svc-session": (SessionSettings, None),
    "svc-history": (HistorySettings, None),
    "svc-history-indexer": (
        HistorySettings,
        frozenset({"cassandra_hosts", "cassandra_port", "pulsar_url", "search", "otlp_endpoint"}),
    ),
    "svc-router": (RouterSettings, None),
    "svc-ledger": (LedgerSettings, None),
}

_HOST = re.compile(r"(?P<host>[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)*\.svc\.cluster\.local)(?::(?P<port>\d+))?")
_ENVOY_ENDPOINT = re.compile(
    r"address:\s*\"?(?P<host>[a-z0-9.-]+\.svc\.cluster\.local)\"?,\s*port_value:\s*(?P<port>\d+)"
)
_ENV_REFERENCE = re.compile(r"\$\{env:(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Endpoint:
    """A host and port a workload is configured to connect to, and the setting naming it."""

    setting: str
    host: str
    port: int


def settings_endpoints(values: Mapping[str, Any], path: str = "") -> Iterator[Endpoint]:
    """Every cluster host:port that settings values (a model_dump) name."""
    for key, value in values.items():
        if isinstance(value, Mapping):
            yield from settings_endpoints(value, f"{path}{key}.")
            continue
        texts = (
            [value]
            if isinstance(value, str)
            else [v for v in value if isinstance(v, str)]
            if isinstance(value, list)
            else []
        )
        for text in texts:
            for found in _HOST.finditer(text):
                if found["port"]:
                    yield Endpoint(f"{path}{key}", found["host"], int(found["port"]))
                    continue
                stem = re.sub(r"_hosts?$", "", str(key))
                ports = [v for k, v in values.items() if str(k).startswith(stem) and str(k).endswith("port")]
                assert ports, (
                    f"{path}{key} names {found['host']} without a port, and no {stem}*_port beside it"
                )
                yield from (Endpoint(f"{path}{key}", found["host"], int(port)) for port in ports)


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ holding env's PARLEY_* variables only (the Settings classes read it)."""
    saved = {key: value for key, value in os.environ.items() if key.startswith("PARLEY_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    try:
        yield
    finally:
        for key in env:
            os.environ.pop(key, None)
        os.environ.update(saved)


class Network:
    """The pods and Services of one rendered overlay (the objects the API server accepted)."""

    def __init__(self, objects: list[Obj]) -> None:
        self.objects = objects
        self.deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
        self.workloads = [
            Pod(
                name,
                deployment["metadata"]["namespace"],
                deployment["spec"]["template"]["metadata"]["labels"],
                {
                    port["name"]: port["containerPort"]
                    for container in deployment["spec"]["template"]["spec"]["containers"]
                    for port in container.get("ports", [])
                    if "name" in port
                },
            )
            for name, deployment in self.deployments.items()
        ]
        self.pods = [
            *self.workloads,
            *STORE_PODS,
            KUBE_DNS,
            KUBE_SYSTEM_OTHER,
            PROMETHEUS,
            TRACE_BACKEND,
            INTERNET,
        ]
        self.services = [
            *(
                Service(
                    o["metadata"]["namespace"],
                    o["metadata"]["name"],
                    o["spec"].get("selector", {}),
                    o["spec"].get("clusterIP") == "None",
                    {p["port"]: p.get("targetPort", p["port"]) for p in o["spec"]["ports"]},
                )
                for o in objects
                if o["kind"] == "Service"
            ),
            *STORE_SERVICES,
        ]

    def pod(self, name: str) -> Pod:
        [pod] = [pod for pod in self.pods if pod.name == name]
        return pod

    def _object(self, kind: str, name: str) -> Obj:
        [found] = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]
        return found

    def environment(self, workload: str) -> dict[str, str]:
        """The variables its Deployment's containers get from their ConfigMaps and Secrets."""
        env: dict[str, str] = {}
        for container in self.deployments[workload]["spec"]["template"]["spec"]["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    env.update(self._object("ConfigMap", source["configMapRef"]["name"]).get("data", {}))
                if "secretRef" in source:
                    data = self._object("Secret", source["secretRef"]["name"]).get("data", {})
                    env.update({key: base64.b64decode(value).decode() for key, value in data.items()})
            env.update({var["name"]: var["value"] for var in container.get("env", []) if "value" in var})
        return env

    def endpoints(self, workload: str) -> list[Endpoint]:
        """What workload is configured to connect to."""
        if workload == "envoy":
            [volume] = [
                v
                for v in self.deployments["envoy"]["spec"]["template"]["spec"]["volumes"]
                if "configMap" in v
            ]
            config = self._object("ConfigMap", volume["configMap"]["name"])["data"]["envoy.yaml"]
            return [
                Endpoint("envoy.yaml clusters", m["host"], int(m["port"]))
                for m in _ENVOY_ENDPOINT.finditer(config)
            ]
        if workload == "otel-collector":
            return self._collector_endpoints()
        if workload not in SETTINGS:
            return []
        settings_class, used = SETTINGS[workload]
        with _environment(self.environment(workload)):
            values = settings_class().model_dump()
        if used is not None:
            values = {key: value for key, value in values.items() if key in used}
        return list(settings_endpoints(values))

    def collector_config(self) -> Obj:
        """The OpenTelemetry Collector's configuration, from the ConfigMap its pods mount."""
        [volume] = [
            v
            for v in self.deployments["otel-collector"]["spec"]["template"]["spec"]["volumes"]
            if "configMap" in v
        ]
        config: Obj = yaml.safe_load(
            self._object("ConfigMap", volume["configMap"]["name"])["data"]["config.yaml"]
        )
        return config

    def _collector_endpoints(self) -> list[Endpoint]:
        """Where the collector's exporters send: every `otlp` exporter's endpoint and every
        `loadbalancing` exporter's DNS resolver (a headless Service's pods at its port)."""
        [container] = self.deployments["otel-collector"]["spec"]["template"]["spec"]["containers"]
        env = {var["name"]: var["value"] for var in container.get("env", []) if "value" in var}

        def expand(text: str) -> str:
            return _ENV_REFERENCE.sub(lambda m: env[m["name"]], text)

        found = []
        for name, exporter in self.collector_config()["exporters"].items():
            kind = name.split("/")[0]
            if kind == "otlp":
                target = f"exporters.{name}.endpoint"
                found += [
                    Endpoint(target, m["host"], int(m["port"]))
                    for m in _HOST.finditer(expand(exporter["endpoint"]))
                ]
            elif kind == "loadbalancing":
                dns = exporter["resolver"]["dns"]
                host = expand(dns["hostname"])
                assert _HOST.fullmatch(host), f"exporters.{name}: {host} is no Service's DNS name"
                found.append(Endpoint(f"exporters.{name}.resolver.dns", host, int(dns.get("port", 4317))))
            else:
                raise AssertionError(
                    f"exporters.{name}: flows.py does not know where a {kind} exporter sends"
                )
        return found

    def resolve(self, endpoint: Endpoint) -> list[tuple[Pod, int]]:
        """The pods (and their ports) a connection to endpoint reaches."""
        name, namespace = endpoint.host.split(".")[:2]
        services = [s for s in self.services if (s.namespace, s.name) == (namespace, name)]
        assert services, f"{endpoint.setting}: no Service {name} in {namespace} ({endpoint.host})"
        [service] = services
        pods = [
            pod
            for pod in self.pods
            if pod.namespace == namespace
            and service.selector
            and all(pod.labels.get(key) == value for key, value in service.selector.items())
        ]
        assert pods, f"{endpoint.setting}: Service {name} selects no pod"
        reached = []
        for pod in pods:
            if service.headless:
                port = endpoint.port
            else:
                assert endpoint.port in service.ports, (
                    f"{endpoint.setting}: Service {name} has no port {endpoint.port}"
                )
                target = service.ports[endpoint.port]
                assert isinstance(target, int) or target in pod.ports, (
                    f"{name}: {pod.name} has no port {target}"
                )
                port = target if isinstance(target, int) else pod.ports[target]
            assert port in pod.ports.values(), f"{endpoint.setting}: {pod.name} listens on no port {port}"
            reached.append((pod, port))
        return reached

    def flows(self, workload: str) -> list[Flow]:
        """Every connection workload's configuration makes, pod to pod."""
        source = self.pod(workload)
        return [
            Flow(source, pod, port)
            for endpoint in self.endpoints(workload)
            for pod, port in self.resolve(endpoint)
        ]

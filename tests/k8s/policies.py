"""The rules every rendered workload must keep (docs/adr/0019-kubernetes.md), as plain checks,
and an evaluator of NetworkPolicies (ingress and egress) for the flows between pods.

Each rule function takes the objects the API server accepted (JSON, defaults filled in) and
returns the violations, one readable line each; an empty list means the rules hold.
`flow_refusals` answers the same way for one connection: why the policies refuse it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

_WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")


def _name(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def _containers(obj: Obj) -> Iterator[tuple[Obj, Obj]]:
    """(pod spec, container) of every workload's containers (init containers excluded)."""
    if obj["kind"] in _WORKLOADS:
        pod = obj["spec"]["template"]["spec"]
        for container in pod["containers"]:
            yield pod, container


def probe_violations(objects: list[Obj]) -> list[str]:
    """Every container has a liveness and a readiness probe."""
    return [
        f"{_name(obj)}: container {container['name']} has no {probe}"
        for obj in objects
        for _pod, container in _containers(obj)
        for probe in ("livenessProbe", "readinessProbe")
        if probe not in container
    ]


def resource_violations(objects: list[Obj]) -> list[str]:
    """Every container requests and limits CPU and memory."""
    found = []
    for obj in objects:
        for _pod, container in _containers(obj):
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(kind, {}):
                        found.append(f"{_name(obj)}: container {container['name']} has no {kind}.{resource}")
    return found


def security_violations(objects: list[Obj]) -> list[str]:
    """Every container runs as non-root, read-only, without privilege escalation."""
    found = []
    for obj in objects:
        for pod, container in _containers(obj):
            context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
            where = f"{_name(obj)}: container {container['name']}"
            if context.get("runAsNonRoot") is not True:
                found.append(f"{where} may run as root")
            if context.get("readOnlyRootFilesystem") is not True:
                found.append(f"{where} has a writable root file system")
            if context.get("allowPrivilegeEscalation") is not False:
                found.append(f"{where} allows privilege escalation")
    return found


def _selects(selector: Obj, labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def pdb_violations(objects: list[Obj]) -> list[str]:
    """Every Deployment's pods are covered by a PodDisruptionBudget."""
    budgets = [obj["spec"]["selector"] for obj in objects if obj["kind"] == "PodDisruptionBudget"]
    return [
        f"{_name(obj)} has no PodDisruptionBudget"
        for obj in objects
        if obj["kind"] == "Deployment"
        and not any(_selects(s, obj["spec"]["template"]["metadata"]["labels"]) for s in budgets)
    ]


def load_balancer_violations(objects: list[Obj]) -> list[str]:
    """Only Envoy's Service is of type LoadBalancer (or NodePort)."""
    return [
        f"{_name(obj)} is of type {obj['spec']['type']}"
        for obj in objects
        if obj["kind"] == "Service"
        and obj["spec"].get("type") in ("LoadBalancer", "NodePort")
        and obj["metadata"]["name"] != "envoy"
    ]


def all_violations(objects: list[Obj]) -> list[str]:
    return [
        *probe_violations(objects),
        *resource_violations(objects),
        *security_violations(objects),
        *pdb_violations(objects),
        *load_balancer_violations(objects),
    ]


# NetworkPolicies -------------------------------------------------------------------------
# The semantics of networking.k8s.io/v1 (kubernetes.io/docs/concepts/services-networking/
# network-policies): a pod is isolated for a direction once any policy of its namespace
# selects it with that direction in policyTypes; an isolated pod's connection is allowed
# when at least one of those policies has a rule whose peers and ports both match. A
# connection needs the source's egress and the destination's ingress. Reply packets of an
# allowed connection are always allowed, so they are not modelled.


@dataclass(frozen=True)
class Pod:
    """A pod as the policies see it: where it runs, its labels, its named container ports."""

    name: str
    namespace: str | None
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)
    #: Only for addresses outside the cluster (namespace None), which ipBlock peers match.
    ip: str | None = None


@dataclass(frozen=True)
class Flow:
    """One connection: source pod to destination pod's port."""

    source: Pod
    destination: Pod
    port: int
    protocol: str = "TCP"

    def __str__(self) -> str:
        return f"{self.source.name} -> {self.destination.name}:{self.port}/{self.protocol}"


def selects(selector: Obj, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector against labels; the empty selector selects everything."""
    if not all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _policy_types(policy: Obj) -> list[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if "egress" in spec else [])]


def _peer_matches(
    peer: Obj, policy_namespace: str, pod: Pod, namespaces: Mapping[str, Mapping[str, str]]
) -> bool:
    if "ipBlock" in peer:
        if pod.ip is None:
            return False
        address = ipaddress.ip_address(pod.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(excepted) for excepted in block.get("except", [])
        )
    if pod.namespace is None:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], namespaces.get(pod.namespace, {})):
            return False
    elif pod.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector", {}), pod.labels)


def _port_matches(rule_port: Obj, flow: Flow) -> bool:
    if rule_port.get("protocol", "TCP") != flow.protocol:
        return False
    if "port" not in rule_port:
        return True
    port = rule_port["port"]
    if isinstance(port, str):  # a named port is the destination pod's, in both directions
        return flow.destination.ports.get(port) == flow.port
    first = int(port)
    return first <= flow.port <= int(rule_port.get("endPort", first))


def _allowed(
    policies: Iterable[Obj],
    direction: str,
    pod: Pod,
    peer: Pod,
    flow: Flow,
    namespaces: Mapping[str, Mapping[str, str]],
) -> bool | None:
    """Whether the policies of pod's namespace let flow through in direction; None when no
    policy isolates pod for it (then everything is allowed)."""
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    isolating = [
        policy
        for policy in policies
        if policy["metadata"].get("namespace") == pod.namespace
        and direction in _policy_types(policy)
        and selects(policy["spec"].get("podSelector", {}), pod.labels)
    ]
    if not isolating:
        return None
    return any(
        ("ports" not in rule or any(_port_matches(port, flow) for port in rule["ports"]))
        and (
            peers_key not in rule
            or any(
                _peer_matches(p, policy["metadata"]["namespace"], peer, namespaces) for p in rule[peers_key]
            )
        )
        for policy in isolating
        for rule in policy["spec"].get(rules_key) or []
    )


def flow_refusals(
    objects: Iterable[Obj], flow: Flow, namespaces: Mapping[str, Mapping[str, str]]
) -> list[str]:
    """Why the NetworkPolicies among objects refuse flow (empty: they allow it). namespaces:
    each namespace's labels, which namespaceSelectors match."""
    policies = [obj for obj in objects if obj["kind"] == "NetworkPolicy"]
    found = []
    if (
        flow.source.namespace is not None
        and _allowed(policies, "Egress", flow.source, flow.destination, flow, namespaces) is False
    ):
        found.append(f"{flow}: no egress rule of {flow.source.name} allows it")
    if (
        flow.destination.namespace is not None
        and _allowed(policies, "Ingress", flow.destination, flow.source, flow, namespaces) is False
    ):
        found.append(f"{flow}: no ingress rule of {flow.destination.name} allows it")
    return found

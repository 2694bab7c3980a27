"""The rules every rendered workload must keep (docs/adr/0019-kubernetes.md), as plain checks.

Each function takes the objects the API server accepted (JSON, defaults filled in) and
returns the violations, one readable line each; an empty list means the rules hold.
"""

from __future__ import annotations

from collections.abc import Iterator
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

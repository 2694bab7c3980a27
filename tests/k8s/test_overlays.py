"""Every overlay renders, a real kube-apiserver accepts it, and what it accepted keeps the rules.

The API server validates everything it would store (fields, selectors, the operators' CRD
schemas) in a server-side dry run; the policies (tests/k8s/policies.py) then run over the
objects it returned, defaults filled in.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.k8s import policies
from tests.k8s.conftest import OVERLAYS, Cluster


def test_there_are_dev_and_production_overlays() -> None:
    assert OVERLAYS == ["dev", "production"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlay_is_accepted_and_keeps_every_policy(
    accepted: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = accepted[overlay]
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"} <= kinds
    assert {"CassandraDatacenter", "RedisReplication", "RedisSentinel"} <= kinds
    assert policies.all_violations(objects) == []


def test_production_runs_triton_on_gpu_nodes(accepted: dict[str, list[dict[str, Any]]]) -> None:
    [triton] = [
        o for o in accepted["production"] if o["kind"] == "Deployment" and o["metadata"]["name"] == "triton"
    ]
    pod = triton["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["containers"][0]["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"


def test_the_router_scales_on_its_active_streams(accepted: dict[str, list[dict[str, Any]]]) -> None:
    [hpa] = [
        o
        for o in accepted["production"]
        if o["kind"] == "HorizontalPodAutoscaler" and o["metadata"]["name"] == "svc-router"
    ]
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "parley_router_active_streams"


def _first(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return copy.deepcopy(next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name))


def test_a_container_without_a_probe_breaks_the_policy(accepted: dict[str, list[dict[str, Any]]]) -> None:
    router = _first(accepted["dev"], "Deployment", "svc-router")
    del router["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert policies.probe_violations([router]) == [
        "Deployment/svc-router: container svc-router has no readinessProbe"
    ]


def test_a_container_without_a_limit_breaks_the_policy(accepted: dict[str, list[dict[str, Any]]]) -> None:
    web = _first(accepted["dev"], "Deployment", "web")
    del web["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert policies.resource_violations([web]) == ["Deployment/web: container web has no limits.memory"]


def test_a_root_container_a_deployment_without_pdb_and_a_second_load_balancer_break_the_policy(
    accepted: dict[str, list[dict[str, Any]]],
) -> None:
    web = _first(accepted["dev"], "Deployment", "web")
    web["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = False
    web["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False
    service = _first(accepted["dev"], "Service", "web")
    service["spec"]["type"] = "LoadBalancer"
    assert policies.security_violations([web]) == ["Deployment/web: container web may run as root"]
    assert policies.pdb_violations([web]) == ["Deployment/web has no PodDisruptionBudget"]
    assert policies.load_balancer_violations([service]) == ["Service/web is of type LoadBalancer"]


_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken, namespace: parley}
spec:
  selector: {matchLabels: {app.kubernetes.io/name: broken}}
  template:
    metadata: {labels: {app.kubernetes.io/name: %(label)s}}
    spec:
      containers:
        - name: broken
          image: registry.example.com/broken:1
          %(field)s: {grpc: {port: 50051}}
"""


def test_a_sound_manifest_is_accepted(cluster: Cluster) -> None:
    result = cluster.dry_run(_DEPLOYMENT % {"label": "broken", "field": "livenessProbe"})
    assert result.returncode == 0, result.stderr


def test_a_wrong_field_is_refused(cluster: Cluster) -> None:
    result = cluster.dry_run(_DEPLOYMENT % {"label": "broken", "field": "livenesProbe"})
    assert result.returncode != 0
    assert 'containers[name="broken"].livenesProbe: field not declared in schema' in result.stderr


def test_a_selector_that_does_not_match_its_pods_is_refused(cluster: Cluster) -> None:
    result = cluster.dry_run(_DEPLOYMENT % {"label": "other", "field": "livenessProbe"})
    assert result.returncode != 0
    assert "`selector` does not match template `labels`" in result.stderr


def test_a_custom_resource_that_breaks_its_crd_schema_is_refused(cluster: Cluster) -> None:
    manifest = """
apiVersion: cassandra.datastax.com/v1beta1
kind: CassandraDatacenter
metadata: {name: broken, namespace: parley}
spec: {clusterName: parley, serverType: cassandra, serverVersion: "5.0", size: 3, storageConfig: {}}
"""
    result = cluster.dry_run(manifest)
    assert result.returncode != 0
    assert "spec.serverVersion" in result.stderr

"""Every process that uses Cassandra signs in with the datacenter's credentials Secret.

cass-operator's datacenters authenticate clients; the services read the role's username
and password from `PARLEY_<SVC>_CASSANDRA_USERNAME` / `_PASSWORD`, which each Deployment
fills from the Secret the CassandraDatacenter names as its superuser's (docs/adr/0019). The
checks run on what a real kube-apiserver accepted in a server-side dry run (`accepted`,
tests/k8s/conftest.py).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.k8s.conftest import OVERLAYS

Obj = dict[str, Any]

#: The Deployments whose settings name a Cassandra host (the four services and the indexer).
USERS_OF_CASSANDRA = {"svc-session", "svc-history", "svc-history-indexer", "svc-router", "svc-ledger"}


def _one(objects: list[Obj], kind: str) -> Obj:
    [found] = [o for o in objects if o["kind"] == kind]
    return found


def _cassandra_prefixes(objects: list[Obj]) -> dict[str, str]:
    """Deployment name -> the settings prefix (PARLEY_HISTORY_) under which its configuration
    names a Cassandra host, for every Deployment whose configuration does."""
    config_maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    prefixes = {}
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        for source in container.get("envFrom", []):
            settings = config_maps.get(source.get("configMapRef", {}).get("name"), {})
            for key in settings:
                if key.endswith("_CASSANDRA_HOSTS"):
                    prefixes[deployment["metadata"]["name"]] = key.removesuffix("CASSANDRA_HOSTS")
    return prefixes


def _secret_refs(container: Obj) -> dict[str, Obj]:
    """Variable name -> its secretKeyRef, for the container's variables taken from a Secret."""
    return {
        variable["name"]: variable["valueFrom"]["secretKeyRef"]
        for variable in container.get("env", [])
        if "secretKeyRef" in variable.get("valueFrom", {})
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_that_uses_cassandra_gets_both_credentials_from_the_superuser_secret(
    accepted: dict[str, list[Obj]], overlay: str
) -> None:
    objects = accepted[overlay]
    secret = _one(objects, "CassandraDatacenter")["spec"]["superuserSecretName"]
    prefixes = _cassandra_prefixes(objects)
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}

    assert set(prefixes) == USERS_OF_CASSANDRA
    for name, prefix in prefixes.items():
        [container] = deployments[name]["spec"]["template"]["spec"]["containers"]
        refs = _secret_refs(container)
        assert refs.get(f"{prefix}CASSANDRA_USERNAME") == {"name": secret, "key": "username"}, name
        assert refs.get(f"{prefix}CASSANDRA_PASSWORD") == {"name": secret, "key": "password"}, name


def test_the_dev_overlay_generates_the_superuser_secret_beside_the_services_with_both_keys(
    accepted: dict[str, list[Obj]],
) -> None:
    objects = accepted["dev"]
    name = _one(objects, "CassandraDatacenter")["spec"]["superuserSecretName"]
    namespaces = {o["metadata"]["namespace"] for o in objects if o["kind"] == "Deployment"}
    [secret] = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == name]

    # Generated with its exact name (no hash suffix: cass-operator looks it up by name) and
    # in the namespace of the pods that read it.
    assert namespaces == {secret["metadata"]["namespace"]}
    assert sorted(secret["data"]) == ["password", "username"]
    assert all(base64.b64decode(value) for value in secret["data"].values())

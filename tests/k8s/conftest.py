"""A real kube-apiserver (over etcd) for the whole session, with the operators' CRDs installed.

Both are built by `parley install` (parley_stack/servers/kube.py); here they only start,
on loopback, in a temporary folder.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parley_stack.config import REPO_ROOT, StackConfig
from parley_stack.servers.kube import ApiServer, EtcdTool, KubeApiserverTool
from parley_stack.servers.tools import KubectlTool

K8S = REPO_ROOT / "k8s"
OVERLAYS = sorted(path.name for path in (K8S / "overlays").iterdir() if path.is_dir())
#: The operators' CRDs (vendored from their repositories), installed before any dry run.
CRDS = sorted((REPO_ROOT / "third_party").glob("*-operator/*.yaml"))


def _installed(tool: Any) -> Path:
    if not tool.is_installed():
        pytest.fail(f"{tool.name} is not installed: run `parley install` (make test does)")
    path: Path = tool.binary
    return path


@pytest.fixture(scope="session")
def kubectl() -> Path:
    return _installed(KubectlTool(StackConfig()))


class Cluster:
    """kubectl against the session's API server."""

    def __init__(self, kubectl: Path, server: ApiServer) -> None:
        self.kubectl = kubectl
        self.server = server

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.kubectl), "--kubeconfig", str(self.server.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    def dry_run(self, manifests: str) -> subprocess.CompletedProcess[str]:
        """`kubectl apply --server-side --dry-run=server` of manifests, the accepted objects as JSON."""
        return self.run(
            "apply", "--server-side", "--dry-run=server", "--field-manager=parley-tests",
            "-o", "json", "-f", "-",
            stdin=manifests,
        )  # fmt: skip

    def accepted(self, manifests: str) -> list[dict[str, Any]]:
        result = self.dry_run(manifests)
        assert result.returncode == 0, result.stderr
        reply = json.loads(result.stdout)
        items: list[dict[str, Any]] = reply["items"] if reply.get("kind") == "List" else [reply]
        return items


@pytest.fixture(scope="session")
def cluster(kubectl: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    config = StackConfig()
    etcd, apiserver = _installed(EtcdTool(config)), _installed(KubeApiserverTool(config))
    started = time.monotonic()
    with ApiServer(etcd, apiserver, tmp_path_factory.mktemp("kube")) as server:
        cluster = Cluster(kubectl, server)
        for crd in CRDS:
            applied = cluster.run("apply", "--server-side", "-f", str(crd))
            assert applied.returncode == 0, applied.stderr
        # A vendored file is named <group>_<plural>.yaml; its CRD is <plural>.<group>.
        names = ["crd/{1}.{0}".format(*crd.stem.split("_", 1)) for crd in CRDS]
        waited = cluster.run("wait", "--for=condition=Established", "--timeout=60s", *names)
        assert waited.returncode == 0, waited.stderr
        # Only the default namespaces exist: the dry runs need Parley's own for real, and
        # monitoring's for the Prometheus adapter's rules (k8s/monitoring/).
        for namespace in ("parley", "monitoring"):
            created = cluster.run("create", "namespace", namespace)
            assert created.returncode == 0, created.stderr
        print(f"kube-apiserver ready with CRDs in {time.monotonic() - started:.1f} s")
        yield cluster


def render(kubectl: Path, overlay: str) -> str:
    """`kubectl kustomize` of one overlay."""
    result = subprocess.run(
        [str(kubectl), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="session")
def accepted(kubectl: Path, cluster: Cluster) -> dict[str, list[dict[str, Any]]]:
    """overlay -> the objects the API server accepted in a dry run of its rendering."""
    objects = {}
    for overlay in OVERLAYS:
        started = time.monotonic()
        objects[overlay] = cluster.accepted(render(kubectl, overlay))
        print(f"{overlay}: {len(objects[overlay])} objects accepted in {time.monotonic() - started:.1f} s")
    return objects

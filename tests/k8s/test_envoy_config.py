"""What k8s/ copies from elsewhere is a fresh copy (no server needed)."""

from __future__ import annotations

import inspect
from dataclasses import fields

from edge_proxy.k8s import k8s_edge_inputs
from edge_proxy.render import EdgeInputs, render
from parley_stack.config import REPO_ROOT

K8S = REPO_ROOT / "k8s"


def test_the_committed_envoy_config_is_a_fresh_rendering() -> None:
    committed = (K8S / "base" / "envoy" / "envoy.yaml").read_text()
    assert committed == render(k8s_edge_inputs()), (
        "k8s/base/envoy/envoy.yaml is stale: run `python -m edge_proxy.k8s > k8s/base/envoy/envoy.yaml`"
    )


def test_the_envoy_admin_interface_stays_on_loopback_and_one_proxy_is_trusted() -> None:
    inputs = k8s_edge_inputs()
    assert inputs.admin.host == "127.0.0.1"
    assert inputs.xff_num_trusted_hops == 1


def test_the_catalog_config_map_is_model_repos_catalog() -> None:
    committed = (K8S / "base" / "config" / "catalog.toml").read_text()
    assert committed == (REPO_ROOT / "model_repo" / "catalog.toml").read_text(), (
        "k8s/base/config/catalog.toml is stale: copy model_repo/catalog.toml"
    )


def test_the_generator_decides_every_input_itself() -> None:
    """A field added to EdgeInputs must get a value chosen for Kubernetes, not its default."""
    source = inspect.getsource(k8s_edge_inputs)
    assert [f.name for f in fields(EdgeInputs) if f"{f.name}=" not in source] == []

"""Envoy's tracer: present with a collector (EdgeInputs.otlp), absent without one."""

from __future__ import annotations

import dataclasses

import pytest

from edge_proxy.render import Address, EdgeInputs, render
from parley_stack.config import StackConfig
from parley_stack.servers.envoy import local_edge_inputs

_TRACER = "envoy.tracers.opentelemetry"


def _inputs(**changes: object) -> EdgeInputs:
    return dataclasses.replace(local_edge_inputs(StackConfig(port_offset=7000)), **changes)  # type: ignore[arg-type]


def test_with_a_collector_every_public_request_is_traced_to_its_cluster() -> None:
    config = render(_inputs(otlp=Address("127.0.0.1", 27080)))
    assert config.count(_TRACER) == 1
    assert "random_sampling: {value: 100}" in config
    assert "envoy_grpc: {cluster_name: otlp_collector}" in config
    assert "- name: otlp_collector" in config
    assert 'socket_address: {address: "127.0.0.1", port_value: 27080}' in config


def test_without_a_collector_there_is_no_tracer_and_no_collector_cluster() -> None:
    config = render(_inputs())
    assert _TRACER not in config
    assert "otlp_collector" not in config


def test_the_collector_must_be_an_address() -> None:
    with pytest.raises(TypeError, match="otlp must be an Address"):
        _inputs(otlp="127.0.0.1:27080")

"""The edge's renderer: typed inputs in, one Envoy configuration out, bad inputs refused."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

from edge_proxy.render import Address, EdgeInputs, render
from parley_stack.config import StackConfig
from parley_stack.servers.envoy import local_edge_inputs, render_local

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def _inputs(**changes: object) -> EdgeInputs:
    inputs = EdgeInputs(
        listen=Address("0.0.0.0", 8080),
        admin=Address("127.0.0.1", 9901),
        svc_session=Address("svc-session.parley.svc", 50051),
        svc_history=Address("svc-history.parley.svc", 50052),
        svc_router=Address("svc-router.parley.svc", 50053),
        svc_ledger=Address("svc-ledger.parley.svc", 50054),
    )
    return dataclasses.replace(inputs, **changes)  # type: ignore[arg-type]


def _hcm_settings(config: str) -> dict[str, str]:
    """The scalar settings of the HTTP connection manager: its block's `key: value` lines.

    PyYAML is not a dependency; the block is the lines after the HCM's "@type" that are
    indented at least as far, and its settings are those at exactly that indentation.
    """
    lines = config.splitlines()
    start = next(i for i, line in enumerate(lines) if HCM in line)
    indent = len(lines[start]) - len(lines[start].lstrip())
    settings: dict[str, str] = {}
    for line in lines[start + 1 :]:
        depth = len(line) - len(line.lstrip())
        if line.strip() and depth < indent:
            break
        if depth == indent and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(":")
            settings[key] = value.strip()
    return settings


def test_the_edge_names_the_real_peer_by_default() -> None:
    config = render(_inputs())

    settings = _hcm_settings(config)
    assert settings["stat_prefix"] == "public"  # the block found is the HCM's
    assert settings["use_remote_address"] == "true"
    assert settings["xff_num_trusted_hops"] == "0"
    # ... and the services hear of that address, overwriting a client's own header.
    header = re.search(
        r"key: x-parley-client-address, value: \"([^\"]+)\"\}\n\s+append_action: (\w+)", config
    )
    assert header is not None
    assert header.groups() == ("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "OVERWRITE_IF_EXISTS_OR_ADD")


def test_every_input_lands_in_the_config_and_nothing_is_left_to_fill() -> None:
    config = render(_inputs(xff_num_trusted_hops=2))

    assert _hcm_settings(config)["xff_num_trusted_hops"] == "2"
    assert '{address: "0.0.0.0", port_value: 8080}' in config
    assert '{address: "127.0.0.1", port_value: 9901}' in config
    for name, port in [("session", 50051), ("history", 50052), ("router", 50053), ("ledger", 50054)]:
        assert f'{{address: "svc-{name}.parley.svc", port_value: {port}}}' in config
    assert "$" not in config
    assert "\t" not in config


def test_the_local_stack_renders_its_own_ports_with_no_trusted_hops() -> None:
    stack = StackConfig(port_offset=3000)
    inputs = local_edge_inputs(stack)
    config = render_local(stack)

    assert inputs.xff_num_trusted_hops == 0
    assert inputs.listen == Address(stack.host, stack.port("envoy_public"))
    assert inputs.svc_ledger == Address(stack.host, stack.port("ledger_grpc"))
    assert f"port_value: {stack.port('session_grpc')}}}" in config
    assert _hcm_settings(config)["use_remote_address"] == "true"


@pytest.mark.parametrize("hops", [-1, True, 1.5, "1"])
def test_a_hop_count_must_be_a_whole_number_not_below_zero(hops: object) -> None:
    with pytest.raises(ValueError, match="xff_num_trusted_hops"):
        _inputs(xff_num_trusted_hops=hops)


@pytest.mark.parametrize("port", [-1, 65536, True, "8080"])
def test_a_port_must_be_in_range(port: object) -> None:
    with pytest.raises(ValueError, match="port"):
        Address("127.0.0.1", port)  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["", "a b", 'x", port_value: 1}', "host\nadmin:", "::1\r"])
def test_a_host_that_could_rewrite_the_yaml_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="host"):
        Address(host, 80)


def test_ports_at_the_ends_of_the_range_and_ipv6_hosts_are_accepted() -> None:
    assert Address("::1", 0).port == 0
    assert Address("fd00::1", 65535).host == "fd00::1"


def test_an_upstream_must_be_an_address() -> None:
    with pytest.raises(TypeError, match="svc_router"):
        _inputs(svc_router=("127.0.0.1", 50053))


def test_edge_proxy_imports_nothing_from_the_local_stack() -> None:
    # What production runs never imports parley_stack (DESIGN.md); a fresh interpreter shows it.
    probe = "import sys, edge_proxy.render; print(sorted(m for m in sys.modules if m.startswith('parley')))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "[]"

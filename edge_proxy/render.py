"""Render edge_proxy/envoy.yaml.tmpl for the local stack.

The template holds the whole configuration; an environment only supplies addresses. That
keeps the local stack and production from drifting apart.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

from parley_stack.config import StackConfig

TEMPLATE = Path(__file__).with_name("envoy.yaml.tmpl")

#: Envoy cluster -> the stack's port name of the service behind it.
UPSTREAMS = {
    "svc_session": "session_grpc",
    "svc_history": "history_grpc",
    "svc_router": "router_grpc",
    "svc_ledger": "ledger_grpc",
}


def render(values: dict[str, str | int]) -> str:
    """The configuration with every ${name} replaced; a missing value is an error."""
    return Template(TEMPLATE.read_text()).substitute(values)


def render_local(config: StackConfig) -> str:
    """The configuration for the local stack: everything on loopback."""
    values: dict[str, str | int] = {
        "listen_host": config.host,
        "public_port": config.port("envoy_public"),
        "admin_host": config.host,
        "admin_port": config.port("envoy_admin"),
    }
    for cluster, port_name in UPSTREAMS.items():
        values[f"{cluster}_host"] = config.host
        values[f"{cluster}_port"] = config.port(port_name)
    return render(values)

"""Render edge_proxy/envoy.yaml.tmpl from typed inputs.

The template holds the whole configuration; an environment (the local stack, `k8s/`) only
supplies addresses and how many trusted proxies stand in front of Envoy. That keeps the
local stack and production from drifting apart, and this package free of either.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, fields
from pathlib import Path
from string import Template

from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from edge_proxy.api import ANONYMOUS, PUBLIC, Route

TEMPLATE = Path(__file__).with_name("envoy.yaml.tmpl")

#: What a host may look like: an IPv4/IPv6 address or a DNS name. Anything else (a quote,
#: a newline, a space) could change the YAML it is pasted into, so it is refused.
_HOST = re.compile(r"[A-Za-z0-9._:-]+")


#: What an issuer or audience may look like: URL characters, nothing YAML would read.
_CLAIM = re.compile(r"[A-Za-z0-9._:/-]{1,200}")


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Address:
    """A host and a port; port 0 lets the operating system pick a free one (listeners)."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not _HOST.fullmatch(self.host):
            raise ValueError(f"host must be an IP address or a DNS name, got {self.host!r}")
        if not _is_int(self.port) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be an integer in 0..65535, got {self.port!r}")


@dataclass(frozen=True)
class EdgeInputs:
    """Everything an environment decides about the edge; the rest is in the template."""

    listen: Address  # the public listener: native gRPC and gRPC-Web
    admin: Address
    svc_session: Address
    svc_history: Address
    svc_router: Address
    svc_ledger: Address
    #: svc_session's JWKS over plain HTTP (`/.well-known/jwks.json`), for jwt_authn.
    session_jwks: Address
    #: The `iss` and `aud` an access token must carry (svc_session's settings).
    issuer: str = "https://parley.local/session"
    audience: str = "parley"
    #: Trusted proxies (a cloud load balancer, say) in front of Envoy that append the address
    #: they saw to X-Forwarded-For. 0: Envoy is the edge and the TCP peer is the client.
    xff_num_trusted_hops: int = 0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name in ("issuer", "audience"):
                if not isinstance(value, str) or not _CLAIM.fullmatch(value):
                    raise ValueError(f"{field.name} must be a plain URL or name, got {value!r}")
            elif field.name != "xff_num_trusted_hops" and not isinstance(value, Address):
                raise TypeError(f"{field.name} must be an Address, got {value!r}")
        if self.admin.host not in _LOOPBACK:
            # The admin interface can drain listeners and quit the server: never off the host.
            raise ValueError(f"the admin interface listens on loopback only, got {self.admin.host!r}")
        hops = self.xff_num_trusted_hops
        if not _is_int(hops) or hops < 0:
            raise ValueError(f"xff_num_trusted_hops must be an integer >= 0, got {hops!r}")


#: Envoy's clusters, in the template's order.
CLUSTERS = ("svc_session", "svc_history", "svc_router", "svc_ledger")


#: What a call without a valid access token is told at the edge.
UNAUTHENTICATED_MESSAGE = "a valid access token is required (authorization: Bearer ...)"


def _unauthenticated_details() -> str:
    """`grpc-status-details-bin` of the edge's refusal: a google.rpc.Status with one ErrorInfo,
    as the services send (reason UNAUTHENTICATED, domain parley.dev), base64 without padding."""
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(
            reason="UNAUTHENTICATED", domain="parley.dev", metadata={"source": "edge"}
        )
    )
    status = status_pb2.Status(code=16, message=UNAUTHENTICATED_MESSAGE, details=[info])
    return base64.b64encode(status.SerializeToString()).decode().rstrip("=")


#: Reads are retried when the upstream answered UNAVAILABLE or could not be reached.
_READ_RETRIES = 'retry_on: "unavailable,connect-failure,reset", num_retries: 2, per_try_timeout: 10s'


def _route(path: str, route: Route) -> str:
    # Streams: no overall timeout, an idle timeout instead.
    timing = "timeout: 0s, idle_timeout: 300s" if route.stream else "timeout: 30s"
    retry = ", retry_policy: {" + _READ_RETRIES + "}" if route.read else ""
    match = f'              - match: {{path: "{path}"}}'
    return f"{match}\n                route: {{cluster: {route.cluster}, {timing}{retry}}}"


def render(inputs: EdgeInputs) -> str:
    """The configuration with every ${name} of the template filled in from inputs."""
    values: dict[str, str | int] = {
        "listen_host": inputs.listen.host,
        "public_port": inputs.listen.port,
        "admin_host": inputs.admin.host,
        "admin_port": inputs.admin.port,
        "xff_num_trusted_hops": inputs.xff_num_trusted_hops,
        "unauthenticated_message": UNAUTHENTICATED_MESSAGE,
        "unauthenticated_details": _unauthenticated_details(),
        "issuer": inputs.issuer,
        "audience": inputs.audience,
    }
    values["routes"] = "\n".join(_route(path, route) for path, route in PUBLIC.items())
    values["token_rules"] = "\n".join(
        f'              - match: {{path: "{path}"}}\n                requires: {{provider_name: parley}}'
        for path in PUBLIC
        if path not in ANONYMOUS
    )
    for cluster in (*CLUSTERS, "session_jwks"):
        upstream: Address = getattr(inputs, cluster)
        values[f"{cluster}_host"] = upstream.host
        values[f"{cluster}_port"] = upstream.port
    # substitute, not safe_substitute: a ${name} the template gained without an input here
    # is a KeyError, never a literal "${name}" in Envoy's config.
    return Template(TEMPLATE.read_text()).substitute(values)

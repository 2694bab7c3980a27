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

from google.protobuf import any_pb2, duration_pb2
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


#: A service cluster's hosts: one address (a DNS name Envoy resolves to every ready pod, in
#: Kubernetes) or several (a local drill with a second instance, or a test's host that is down).
Upstream = Address | tuple[Address, ...]


def upstream_addresses(upstream: Upstream) -> tuple[Address, ...]:
    return upstream if isinstance(upstream, tuple) else (upstream,)


@dataclass(frozen=True)
class EdgeInputs:
    """Everything an environment decides about the edge; the rest is in the template."""

    listen: Address  # the public listener: native gRPC and gRPC-Web
    admin: Address
    svc_session: Upstream
    svc_history: Upstream
    svc_router: Upstream
    svc_ledger: Upstream
    #: svc_session's JWKS over plain HTTP (`/.well-known/jwks.json`), for jwt_authn.
    session_jwks: Address
    #: svc_session's internal listener: Envoy's rate limit service (gRPC), never public.
    rate_limit: Address
    #: The web app's static files (web/dist) over plain HTTP/1.1.
    web: Address
    #: The internal listener: Envoy's own view of each service cluster's health
    #: (`/clusters/{cluster}/health` and `.../health/any`, 200 or 503), for svc_ledger's
    #: GetSystemHealth. Reachable inside the cluster only, never the public listener's address.
    internal: Address
    #: The `iss` and `aud` an access token must carry (svc_session's settings).
    issuer: str = "https://parley.local/session"
    audience: str = "parley"
    #: Trusted proxies (a cloud load balancer, say) in front of Envoy that append the address
    #: they saw to X-Forwarded-For. 0: Envoy is the edge and the TCP peer is the client.
    xff_num_trusted_hops: int = 0
    #: An OpenTelemetry collector's OTLP/gRPC receiver: Envoy sends a span of every request
    #: to it. None: Envoy records no span (it still passes a client's traceparent on).
    otlp: Address | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name in ("issuer", "audience"):
                if not isinstance(value, str) or not _CLAIM.fullmatch(value):
                    raise ValueError(f"{field.name} must be a plain URL or name, got {value!r}")
            elif field.name == "otlp" and value is None:
                continue
            elif field.name in CLUSTERS and isinstance(value, tuple):
                if not value or not all(isinstance(one, Address) for one in value):
                    raise TypeError(f"{field.name} must be an Address or a non-empty tuple of them")
            elif field.name != "xff_num_trusted_hops" and not isinstance(value, Address):
                raise TypeError(f"{field.name} must be an Address, got {value!r}")
        if self.internal == self.listen or self.internal.port == self.listen.port != 0:
            # The clusters' health is for the platform's own services, never the internet.
            raise ValueError("the internal listener must not share the public listener's port")
        if self.admin.host not in _LOOPBACK:
            # The admin interface can drain listeners and quit the server: never off the host.
            raise ValueError(f"the admin interface listens on loopback only, got {self.admin.host!r}")
        hops = self.xff_num_trusted_hops
        if not _is_int(hops) or hops < 0:
            raise ValueError(f"xff_num_trusted_hops must be an integer >= 0, got {hops!r}")


#: Envoy's clusters of the four services, in the template's order.
CLUSTERS = ("svc_session", "svc_history", "svc_router", "svc_ledger")


def cluster_health_path(cluster: str) -> str:
    """The internal listener's path of one cluster's health: 200 while every host of the
    cluster passes Envoy's active health checks, 503 otherwise (or while Envoy drains)."""
    return f"/clusters/{cluster}/health"


def cluster_any_healthy_path(cluster: str) -> str:
    """200 while at least one host of the cluster passes its health checks (Envoy still
    routes to it), 503 when none does (or while Envoy drains). With the path above it tells
    a cluster that lost some hosts (DEGRADED) from one that lost all (UNHEALTHY)."""
    return f"{cluster_health_path(cluster)}/any"


#: The share of a cluster's hosts that must be healthy for its health path to answer 200.
CLUSTER_MIN_HEALTHY_PERCENT = 100.0

#: The same for the any-healthy path. Envoy takes the percentage as a whole number (0.5 is 0,
#: which passes with no healthy host at all) and answers 503 when 100 * healthy < total *
#: percent: 1 means "at least one host" for clusters of up to 100 hosts.
CLUSTER_ANY_HEALTHY_PERCENT = 1.0

#: The largest request body (one gRPC message and its 5-byte frame header) the edge takes
#: for a unary or server-streaming method. A message's text is at most 100,000 characters
#: (400,000 bytes of UTF-8), so 1 MiB is generous; past it the edge answers
#: RESOURCE_EXHAUSTED (REQUEST_TOO_LARGE) instead of buffering more.
MAX_REQUEST_BYTES = 1024 * 1024

#: The largest request headers, in KiB (Envoy's default is 60): a token and a browser's
#: usual headers fit many times over.
MAX_REQUEST_HEADERS_KB = 32

#: What a page of the web app may load and do: its own scripts, styles, images, fonts and
#: gRPC-Web calls (all same-origin through this edge), nothing inline, no frames, no plugins.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; manifest-src 'self'; form-action 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)

#: Set by the edge (overwriting the file server's) on every answer from the web cluster.
WEB_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}

#: Cache-Control of the web app's files: the page is checked every time (it names the
#: current bundles); the bundles under /assets/ carry a content hash in their names, so a
#: name is never reused for other content.
PAGE_CACHE = "no-cache"
ASSET_CACHE = "public, max-age=31536000, immutable"


#: What a call without a valid access token is told at the edge.
UNAUTHENTICATED_MESSAGE = "a valid access token is required (authorization: Bearer ...)"


#: What a call refused by the edge's rate limit filter is told (RetryInfo cannot be static:
#: the wait is in the `retry-after` header the rate limit service adds).
RATE_LIMITED_MESSAGE = "too many requests; retry later (see retry-after)"

#: What a request body over MAX_REQUEST_BYTES is told.
TOO_LARGE_MESSAGE = f"the request is larger than the edge's limit of {MAX_REQUEST_BYTES} bytes"

#: What a call is told when the edge could not reach the service behind it (no healthy host,
#: a refused or reset connection, retries spent), in place of Envoy's own words about its
#: upstream: UNAVAILABLE (503), with a RetryInfo of UNAVAILABLE_RETRY_S.
UNAVAILABLE_MESSAGE = "the service is unavailable right now; retry shortly"
UNAVAILABLE_RETRY_S = 1

#: Envoy's response flags of those local replies: UH no healthy upstream host, UF upstream
#: connection failure, UC upstream connection termination, URX retries or connect attempts
#: spent. Not UO (circuit breaker overflow) or UT (timeouts): those are load, not absence.
UNAVAILABLE_FLAGS = ("UH", "UF", "UC", "URX")


def _details(
    code: int, message: str, reason: str, domain: str, retry_s: int | None = None, **metadata: str
) -> str:
    """`grpc-status-details-bin` of one of the edge's refusals: a google.rpc.Status with an
    ErrorInfo, as the services send, marked `source: edge` (and a RetryInfo when retry_s is
    given); base64 without padding."""
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata={"source": "edge", **metadata})
    )
    details = [info]
    if retry_s is not None:
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_s)))
        details.append(retry)
    status = status_pb2.Status(code=code, message=message, details=details)
    return base64.b64encode(status.SerializeToString()).decode().rstrip("=")


def _unauthenticated_details() -> str:
    """The refusal of jwt_authn: UNAUTHENTICATED, as a service's (domain parley.dev)."""
    return _details(16, UNAUTHENTICATED_MESSAGE, "UNAUTHENTICATED", "parley.dev")


def _rate_limited_details() -> str:
    """The refusal of the rate limit filter: RATE_LIMITED in the limits' own domain, as
    svc_session's (the bucket is the service's to name; the edge only knows it refused)."""
    return _details(8, RATE_LIMITED_MESSAGE, "RATE_LIMITED", "session.parley.dev")


def _unavailable_details() -> str:
    """The service behind the edge cannot be reached: UNAVAILABLE, SERVICE_UNAVAILABLE."""
    return _details(14, UNAVAILABLE_MESSAGE, "SERVICE_UNAVAILABLE", "parley.dev", retry_s=UNAVAILABLE_RETRY_S)


def _too_large_details() -> str:
    return _details(
        8, TOO_LARGE_MESSAGE, "REQUEST_TOO_LARGE", "parley.dev", limit_bytes=str(MAX_REQUEST_BYTES)
    )


#: Reads are retried when the upstream answered UNAVAILABLE or could not be reached.
_READ_RETRIES = 'retry_on: "unavailable,connect-failure,reset", num_retries: 2, per_try_timeout: 10s'


#: The rate limit descriptor of each kind of bucket (svc_session/rls.py reads the keys):
#: the access token as sent (the service verifies it and picks the user's or the API key's
#: bucket), or the trusted client address (use_remote_address), never a header a client
#: could write; for the anonymous bucket, the address with a fixed `bucket` entry naming it.
RATE_LIMIT_ACTIONS = {
    "token": "{request_headers: {header_name: authorization, descriptor_key: access_token}}",
    "address": "{remote_address: {}}",
    "anonymous": "{generic_key: {descriptor_key: bucket, descriptor_value: anonymous}}, {remote_address: {}}",
}

#: A bidirectional stream's body is never buffered: it is open for the whole conversation.
_NO_BUFFER = (
    "{envoy.filters.http.buffer: "
    '{"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute, disabled: true}}'
)


def _route(path: str, route: Route) -> str:
    # Streams: no overall timeout, an idle timeout instead.
    timing = "timeout: 0s, idle_timeout: 300s" if route.stream else "timeout: 30s"
    retry = ", retry_policy: {" + _READ_RETRIES + "}" if route.read else ""
    limits = f", rate_limits: [{{actions: [{RATE_LIMIT_ACTIONS[route.limit]}]}}]" if route.limit else ""
    match = f'              - match: {{path: "{path}"}}'
    lines = [match, f"                route: {{cluster: {route.cluster}, {timing}{retry}{limits}}}"]
    if route.bidi:
        lines.append(f"                typed_per_filter_config: {_NO_BUFFER}")
    return "\n".join(lines)


def _web_headers(cache_control: str, cache_action: str) -> str:
    """response_headers_to_add of a web route: WEB_HEADERS (overwriting the file server's)
    and cache_control, added as cache_action says."""
    actions = {key: "OVERWRITE_IF_EXISTS_OR_ADD" for key in WEB_HEADERS}
    headers = {**WEB_HEADERS, "cache-control": cache_control}
    return "\n".join(
        f'                - header: {{key: {key}, value: "{value}"}}\n'
        f"                  append_action: {actions.get(key, cache_action)}"
        for key, value in headers.items()
    )


def _cluster_health_filters() -> str:
    """One health_check filter per service cluster on the internal listener, each answering
    its own path from Envoy's view of the cluster (never passed on to the service)."""
    kind = "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck"
    blocks = []
    for cluster in CLUSTERS:
        for path, percent in (
            (cluster_health_path(cluster), CLUSTER_MIN_HEALTHY_PERCENT),
            (cluster_any_healthy_path(cluster), CLUSTER_ANY_HEALTHY_PERCENT),
        ):
            blocks.append(
                f"          - name: envoy.filters.http.health_check\n"
                f"            typed_config:\n"
                f'              "@type": {kind}\n'
                f"              pass_through_mode: false\n"
                f'              headers: [{{name: ":path", string_match: {{exact: "{path}"}}}}]\n'
                f"              cluster_min_healthy_percentages:\n"
                f"                {cluster}: {{value: {percent}}}"
            )
    return "\n".join(blocks)


def _lb_endpoints(upstream: Upstream) -> str:
    """A service cluster's `lb_endpoints`, one per address."""
    return "\n".join(
        f"        - endpoint:\n"
        f"            address:\n"
        f'              socket_address: {{address: "{one.host}", port_value: {one.port}}}'
        for one in upstream_addresses(upstream)
    )


def _tracing(otlp: Address | None) -> tuple[str, str]:
    """The public listener's `tracing` block and the collector's cluster ("" for both
    without a collector)."""
    if otlp is None:
        return "", ""
    tracing = """\
          tracing:
            random_sampling: {value: 100}
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                service_name: envoy
                grpc_service:
                  envoy_grpc: {cluster_name: otlp_collector}
                  timeout: 1s"""
    cluster = f"""\
  # The OpenTelemetry collector that receives Envoy's spans (OTLP over gRPC).
  - name: otlp_collector
    type: STRICT_DNS
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
    load_assignment:
      cluster_name: otlp_collector
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{address: "{otlp.host}", port_value: {otlp.port}}}"""
    return tracing, cluster


def render(inputs: EdgeInputs) -> str:
    """The configuration with every ${name} of the template filled in from inputs."""
    values: dict[str, str | int] = {
        "listen_host": inputs.listen.host,
        "public_port": inputs.listen.port,
        "admin_host": inputs.admin.host,
        "admin_port": inputs.admin.port,
        "internal_host": inputs.internal.host,
        "internal_port": inputs.internal.port,
        "cluster_health_filters": _cluster_health_filters(),
        "xff_num_trusted_hops": inputs.xff_num_trusted_hops,
        "unauthenticated_message": UNAUTHENTICATED_MESSAGE,
        "unauthenticated_details": _unauthenticated_details(),
        "rate_limited_message": RATE_LIMITED_MESSAGE,
        "rate_limited_details": _rate_limited_details(),
        "too_large_message": TOO_LARGE_MESSAGE,
        "too_large_details": _too_large_details(),
        "unavailable_message": UNAVAILABLE_MESSAGE,
        "unavailable_details": _unavailable_details(),
        "unavailable_flags": ", ".join(UNAVAILABLE_FLAGS),
        "max_request_bytes": MAX_REQUEST_BYTES,
        "max_request_headers_kb": MAX_REQUEST_HEADERS_KB,
        "page_headers": _web_headers(PAGE_CACHE, "OVERWRITE_IF_EXISTS_OR_ADD"),
        # The file server marks its own errors no-store: a missing bundle (a deploy half
        # done) must not be remembered for a year.
        "asset_headers": _web_headers(ASSET_CACHE, "ADD_IF_ABSENT"),
        "issuer": inputs.issuer,
        "audience": inputs.audience,
    }
    values["tracing"], values["otlp_cluster"] = _tracing(inputs.otlp)
    values["routes"] = "\n".join(_route(path, route) for path, route in PUBLIC.items())
    values["token_rules"] = "\n".join(
        f'              - match: {{path: "{path}"}}\n                requires: {{provider_name: parley}}'
        for path in PUBLIC
        if path not in ANONYMOUS
    )
    for cluster in CLUSTERS:
        values[f"{cluster}_endpoints"] = _lb_endpoints(getattr(inputs, cluster))
    for name in ("session_jwks", "rate_limit", "web"):
        upstream: Address = getattr(inputs, name)
        values[f"{name}_host"] = upstream.host
        values[f"{name}_port"] = upstream.port
    # substitute, not safe_substitute: a ${name} the template gained without an input here
    # is a KeyError, never a literal "${name}" in Envoy's config.
    return Template(TEMPLATE.read_text()).substitute(values)

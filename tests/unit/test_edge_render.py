"""The edge's renderer: typed inputs in, one Envoy configuration out, bad inputs refused."""

from __future__ import annotations

import base64
import dataclasses
import re
import subprocess
import sys

import pytest
from google.rpc import error_details_pb2, status_pb2

from edge_proxy.api import ANONYMOUS, PUBLIC
from edge_proxy.render import (
    ASSET_CACHE,
    CLUSTERS,
    CONTENT_SECURITY_POLICY,
    MAX_REQUEST_BYTES,
    PAGE_CACHE,
    UNAVAILABLE_MESSAGE,
    WEB_HEADERS,
    Address,
    EdgeInputs,
    render,
)
from parley.chat.v1 import chat_pb2
from parley.history.v1 import history_pb2
from parley.ledger.v1 import ledger_pb2
from parley.session.v1 import session_pb2
from parley_stack.config import StackConfig
from parley_stack.servers.envoy import local_edge_inputs, render_local
from svc_history.servicer import INTERNAL_METHODS as HISTORY_INTERNAL
from svc_history.servicer import PUBLIC_METHODS as HISTORY_ANONYMOUS
from svc_session.servicer import PUBLIC_METHODS as SESSION_ANONYMOUS

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def _inputs(**changes: object) -> EdgeInputs:
    inputs = EdgeInputs(
        listen=Address("0.0.0.0", 8080),
        admin=Address("127.0.0.1", 9901),
        svc_session=Address("svc-session.parley.svc", 50051),
        svc_history=Address("svc-history.parley.svc", 50052),
        svc_router=Address("svc-router.parley.svc", 50053),
        svc_ledger=Address("svc-ledger.parley.svc", 50054),
        session_jwks=Address("svc-session.parley.svc", 8081),
        rate_limit=Address("svc-session-internal.parley.svc", 50061),
        web=Address("web.parley.svc", 8000),
        internal=Address("0.0.0.0", 8090),
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
    assert '{address: "svc-session-internal.parley.svc", port_value: 50061}' in config
    assert '{address: "web.parley.svc", port_value: 8000}' in config
    assert "$" not in config
    assert "\t" not in config


def test_the_local_stack_renders_its_own_ports_with_no_trusted_hops() -> None:
    stack = StackConfig(port_offset=3000)
    inputs = local_edge_inputs(stack)
    config = render_local(stack)

    assert inputs.xff_num_trusted_hops == 0
    assert inputs.listen == Address(stack.host, stack.port("envoy_public"))
    assert inputs.svc_ledger == Address(stack.host, stack.port("ledger_grpc"))
    assert inputs.rate_limit == Address(stack.host, stack.port("session_internal"))
    assert inputs.web == Address(stack.host, stack.port("web_http"))
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


# The public API --------------------------------------------------------------------------

#: The services a client reaches through the edge, and the methods that stay inside.
_SERVICES = [
    session_pb2.DESCRIPTOR.services_by_name["SessionService"],
    history_pb2.DESCRIPTOR.services_by_name["HistoryService"],
    chat_pb2.DESCRIPTOR.services_by_name["ChatService"],
    ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"],
]


def _paths(service: object) -> set[str]:
    return {f"/{service.full_name}/{method.name}" for method in service.methods}  # type: ignore[attr-defined]


def test_every_method_of_the_public_services_is_routed_unless_internal() -> None:
    everything = set().union(*(_paths(service) for service in _SERVICES))

    assert set(PUBLIC) == everything - HISTORY_INTERNAL
    assert "/parley.history.v1.HistoryService/AppendMessage" not in PUBLIC
    assert not any("ServiceIdentityService" in path or "ratelimit" in path for path in PUBLIC)


def test_the_edge_lets_through_unsigned_exactly_what_the_services_take_unsigned() -> None:
    assert ANONYMOUS == SESSION_ANONYMOUS | HISTORY_ANONYMOUS
    assert set(PUBLIC) >= ANONYMOUS


def test_each_public_method_has_its_own_route_and_nothing_else_is_routed() -> None:
    config = render(_inputs())

    routed = re.findall(r'- match: \{path: "([^"]+)"\}\n\s+route: \{cluster: (\w+)', config)
    assert dict(routed) == {path: route.cluster for path, route in PUBLIC.items()}
    assert len(routed) == len(PUBLIC)
    # No route by prefix reaches a service: a new method is never routed by accident.
    assert len(re.findall(r"route: \{cluster: svc_", config)) == len(PUBLIC)
    assert re.search(r'- match: \{prefix: "/"\}\n\s+direct_response: \{status: 404\}', config)


def test_streams_have_an_idle_timeout_and_unary_calls_an_overall_one() -> None:
    config = render(_inputs())

    chat = re.search(r'path: "/parley.chat.v1.ChatService/Chat"\}\n\s+route: \{([^}]+)\}', config)
    models = re.search(r'path: "/parley.chat.v1.ChatService/ListModels"\}\n\s+route: \{([^}]+)\}', config)
    assert chat is not None
    assert models is not None
    assert chat.group(1) == "cluster: svc_router, timeout: 0s, idle_timeout: 300s"
    assert models.group(1).startswith("cluster: svc_router, timeout: 30s, retry_policy: ")


def test_tokens_are_checked_against_the_session_jwks_except_on_anonymous_methods() -> None:
    config = render(_inputs(issuer="https://id.example.com/session", audience="parley-prod"))

    assert 'issuer: "https://id.example.com/session"' in config
    assert 'audiences: ["parley-prod"]' in config
    assert 'uri: "http://svc-session.parley.svc:8081/.well-known/jwks.json"' in config
    checked = re.findall(r'- match: \{path: "([^"]+)"\}\n\s+requires: \{provider_name: parley\}', config)
    assert set(checked) == set(PUBLIC) - ANONYMOUS
    assert len(checked) == len(set(checked))
    # Exact paths only: nothing else, the web app's files among it, needs a token.
    rules = config.split("rules:\n", 1)[1].split("- name: ", 1)[0]
    assert rules.count("- match:") == len(checked)
    assert "prefix" not in rules
    assert "request_headers_to_remove: [x-parley-user-token]" in config


@pytest.mark.parametrize("claim", ["", 'x", evil: "y', "a b", "line\nbreak", "x" * 201])
def test_an_issuer_or_audience_that_could_rewrite_the_yaml_is_refused(claim: str) -> None:
    for field in ("issuer", "audience"):
        with pytest.raises(ValueError, match=field):
            _inputs(**{field: claim})


def test_reads_are_retried_on_unavailable_and_nothing_else_is() -> None:
    config = render(_inputs())

    retried = set(re.findall(r'path: "([^"]+)"\}\n\s+route: \{[^}]*retry_policy', config))
    assert retried == {path for path, route in PUBLIC.items() if route.read}
    assert "/parley.history.v1.HistoryService/ListMessages" in retried
    assert not retried & {
        "/parley.chat.v1.ChatService/Chat",
        "/parley.history.v1.HistoryService/CreateConversation",
        "/parley.history.v1.HistoryService/GetSharedConversation",  # counts a view
        "/parley.session.v1.SessionService/Login",
    }
    assert not any(route.read and route.stream for route in PUBLIC.values())
    assert config.count("circuit_breakers:") == 4


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "envoy-admin.parley.svc"])
def test_the_admin_interface_never_listens_off_the_host(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        _inputs(admin=Address(host, 9901))


# Rate limits (ADR 0017) --------------------------------------------------------------------

_TOKEN_ACTION = "{request_headers: {header_name: authorization, descriptor_key: access_token}}"
_ADDRESS_ACTION = "{remote_address: {}}"
_ANONYMOUS_ACTIONS = (
    "{generic_key: {descriptor_key: bucket, descriptor_value: anonymous}}, {remote_address: {}}"
)


def _route_lines(config: str) -> dict[str, str]:
    """Path -> the route's own lines (its `route:` and anything after, up to the next match)."""
    routes = config.split("              routes:\n", 1)[1].split("http_filters:", 1)[0]
    found = re.findall(r'- match: \{path: "([^"]+)"\}\n((?: {16}[^\n]*\n)+)', routes)
    return dict(found)


def test_each_route_spends_the_bucket_it_names_and_only_that_one() -> None:
    routes = _route_lines(render(_inputs()))

    assert set(routes) == set(PUBLIC)
    for path, route in PUBLIC.items():
        actions = re.findall(r"rate_limits: \[\{actions: \[(.*?)\]\}\]", routes[path])
        expected = {
            "token": [_TOKEN_ACTION],
            "address": [_ADDRESS_ACTION],
            "anonymous": [_ANONYMOUS_ACTIONS],
            None: [],
        }[route.limit]
        assert actions == expected, path


def test_a_call_with_a_token_spends_the_callers_bucket_and_an_anonymous_one_the_address() -> None:
    limits = {path: route.limit for path, route in PUBLIC.items()}

    # Anonymous calls have no token to name a caller: only the trusted client address.
    assert {limits[path] for path in ANONYMOUS} <= {"address", "anonymous", None}
    assert {limit for path, limit in limits.items() if path not in ANONYMOUS} <= {"token", None}
    assert {path for path, limit in limits.items() if limit == "address"} == {
        "/parley.session.v1.SessionService/ResetPassword"
    }
    # The routine ones, guessable with made-up tokens, spend the address's larger bucket;
    # only sign-in (its own buckets in svc_session) spends nothing at the edge.
    assert {path for path, limit in limits.items() if limit == "anonymous"} == {
        "/parley.session.v1.SessionService/RefreshToken",
        "/parley.session.v1.SessionService/VerifyEmail",
        "/parley.history.v1.HistoryService/GetSharedConversation",
    }
    assert {path for path in ANONYMOUS if limits[path] is None} == {
        f"/parley.session.v1.SessionService/{name}" for name in ("Register", "Login", "RequestPasswordReset")
    }


def test_no_request_spends_a_bucket_twice() -> None:
    session = {path for path in PUBLIC if path.startswith("/parley.session.v1.SessionService/")}
    turns = {
        f"/parley.chat.v1.ChatService/{name}" for name in ("Chat", "StreamTurn", "ResumeTurn", "CancelTurn")
    }

    # svc_session spends the caller's bucket itself on every call with a token (`_caller`),
    # and sign-in's address bucket together with the email buckets, all or nothing.
    assert all(PUBLIC[path].limit is None for path in session - ANONYMOUS)
    for name in ("Register", "Login", "RequestPasswordReset"):
        assert PUBLIC[f"/parley.session.v1.SessionService/{name}"].limit is None
    # svc_router admits turns against buckets of its own.
    assert all(PUBLIC[path].limit is None for path in turns)
    # Everything else that needs a token spends the caller's bucket at the edge.
    others = set(PUBLIC) - ANONYMOUS - session - turns
    assert others
    assert {PUBLIC[path].limit for path in others} == {"token"}


def test_the_rate_limit_filter_asks_svc_session_and_lets_requests_pass_when_it_cannot_answer() -> None:
    config = render(_inputs())
    block = config.split("envoy.filters.http.ratelimit\n", 1)[1].split("- name: ", 1)[0]

    assert "domain: parley\n" in block
    assert "failure_mode_deny: false\n" in block
    assert "rate_limited_as_resource_exhausted: true\n" in block
    assert "timeout: 0.25s\n" in block
    assert "envoy_grpc: {cluster_name: svc_session_rls}" in block
    rls = config.split("- name: svc_session_rls\n", 1)[1].split("  - name: ", 1)[0]
    assert "http2_protocol_options" in rls
    assert '{address: "svc-session-internal.parley.svc", port_value: 50061}' in rls
    # jwt_authn first: a forged token costs the rate limit service nothing.
    assert config.index("envoy.filters.http.jwt_authn\n") < config.index("envoy.filters.http.ratelimit\n")


# Request sizes -------------------------------------------------------------------------------


def test_request_headers_and_bodies_are_bounded_except_the_bidirectional_stream() -> None:
    config = render(_inputs())
    routes = _route_lines(config)
    bidi = {
        f"/{service.full_name}/{method.name}"
        for service in _SERVICES
        for method in service.methods
        if method.client_streaming
    }

    assert _hcm_settings(config)["max_request_headers_kb"] == "32"
    assert f"max_request_bytes: {MAX_REQUEST_BYTES}\n" in config
    assert MAX_REQUEST_BYTES == 1024 * 1024
    assert bidi == {"/parley.chat.v1.ChatService/Chat"}
    assert {path for path, route in PUBLIC.items() if route.bidi} == bidi
    unbuffered = {path for path, lines in routes.items() if "BufferPerRoute, disabled: true" in lines}
    assert unbuffered == bidi
    # The buffer filter's limit is set before any filter that may wait on a call.
    assert (
        config.index("envoy.filters.http.buffer\n")
        < config.index("envoy.filters.http.jwt_authn\n")
        < config.index("envoy.filters.http.ratelimit\n")
    )


def test_a_body_too_large_is_resource_exhausted_with_its_reason() -> None:
    config = render(_inputs())
    mapper = re.search(
        r"default_value: 413.*?\n\s+body: \{inline_string: \"([^\"]+)\"\}\n.*?"
        r"key: grpc-status-details-bin, value: \"([^\"]+)\"",
        config,
        re.DOTALL,
    )
    assert mapper is not None
    message, details = mapper.groups()
    status = status_pb2.Status.FromString(base64.b64decode(details + "=" * (-len(details) % 4)))
    [detail] = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)

    assert (status.code, status.message) == (8, message)
    assert (info.reason, info.domain) == ("REQUEST_TOO_LARGE", "parley.dev")
    assert dict(info.metadata) == {"source": "edge", "limit_bytes": str(MAX_REQUEST_BYTES)}
    # Envoy would call 413 UNKNOWN (and 429 UNAVAILABLE to gRPC-Web): the Lua filter, first in
    # the chain, renames exactly these replies.
    rate_limited = re.search(
        r"default_value: 429.*?grpc-status-details-bin, value: \"([^\"]+)\"", config, re.DOTALL
    )
    assert rate_limited is not None
    lua = config.split("envoy.filters.http.lua\n", 1)[1].split("- name: ", 1)[0]
    assert f'if details == "{details}" or details == "{rate_limited.group(1)}" then' in lua
    assert 'headers:replace("grpc-status", "8")' in lua
    assert config.index("envoy.filters.http.lua\n") < config.index("envoy.filters.http.grpc_web\n")


def test_a_service_the_edge_cannot_reach_is_unavailable_with_reason_and_retry() -> None:
    config = render(_inputs())
    mapper = re.search(
        r"response_flag_filter: \{flags: \[([A-Z, ]+)\]\}\n\s+body: \{inline_string: \"([^\"]+)\"\}\n.*?"
        r"key: grpc-status-details-bin, value: \"([^\"]+)\"",
        config,
        re.DOTALL,
    )
    assert mapper is not None
    flags, message, details = mapper.groups()
    status = status_pb2.Status.FromString(base64.b64decode(details + "=" * (-len(details) % 4)))
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert [status.details[0].Unpack(info), status.details[1].Unpack(retry)] == [True, True]

    # No healthy host, a failed or reset connection, retries spent: not overflow or timeouts.
    assert flags.split(", ") == ["UH", "UF", "UC", "URX"]
    assert (status.code, status.message, message) == (14, UNAVAILABLE_MESSAGE, UNAVAILABLE_MESSAGE)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "SERVICE_UNAVAILABLE",
        "parley.dev",
        {"source": "edge"},
    )
    assert retry.retry_delay.seconds == 1
    # The reply keeps Envoy's 503 (UNAVAILABLE): the mapper sets no status_code.
    block = config[mapper.start() : mapper.end()]
    assert "status_code:" not in block


# The web app ----------------------------------------------------------------------------------


def _web_route(config: str, prefix: str) -> str:
    match = re.search(
        rf'- match:\n\s+prefix: "{re.escape(prefix)}"\n\s+headers: \[([^\n]+)\]\n'
        r"\s+route: \{cluster: web, timeout: 10s\}\n\s+response_headers_to_add:\n"
        r"((?: {16}- header[^\n]+\n {18}append_action[^\n]+\n)+)",
        config,
    )
    assert match is not None, prefix
    assert match.group(1) == '{name: ":method", string_match: {safe_regex: {regex: "GET|HEAD"}}}'
    return match.group(2)


def _headers(block: str) -> dict[str, tuple[str, str]]:
    pairs = re.findall(r'key: ([\w-]+), value: "([^"]*)"\}\n\s+append_action: (\w+)', block)
    return {key: (value, action) for key, value, action in pairs}


def test_the_web_apps_files_get_a_strict_policy_from_the_edge() -> None:
    config = render(_inputs())
    page, assets = _headers(_web_route(config, "/")), _headers(_web_route(config, "/assets/"))

    assert CONTENT_SECURITY_POLICY == (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "font-src 'self'; connect-src 'self'; manifest-src 'self'; form-action 'none'; "
        "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    )
    security = {key: (value, "OVERWRITE_IF_EXISTS_OR_ADD") for key, value in WEB_HEADERS.items()}
    assert page == {**security, "cache-control": (PAGE_CACHE, "OVERWRITE_IF_EXISTS_OR_ADD")}
    # The file server's no-store on a missing bundle stays.
    assert assets == {**security, "cache-control": (ASSET_CACHE, "ADD_IF_ABSENT")}
    assert (PAGE_CACHE, ASSET_CACHE) == ("no-cache", "public, max-age=31536000, immutable")
    assert WEB_HEADERS["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert WEB_HEADERS["x-frame-options"] == "DENY"
    assert WEB_HEADERS["x-content-type-options"] == "nosniff"


def test_web_routes_come_after_every_grpc_route_and_a_grpc_path_is_never_a_page() -> None:
    config = render(_inputs())
    routes = config.split("              routes:\n", 1)[1]
    first_web = routes.index("route: {cluster: web")
    last_grpc = max(routes.index(f'path: "{path}"') for path in PUBLIC)
    not_a_page = re.search(
        r'- match:\n\s+prefix: "/parley\."\n\s+headers: \[\{name: ":method", string_match: '
        r'\{safe_regex: \{regex: "GET\|HEAD"\}\}\}\]\n\s+direct_response: \{status: 404\}',
        routes,
    )

    assert last_grpc < first_web
    assert not_a_page is not None
    assert not_a_page.start() < min(routes.index(f'path: "{path}"') for path in PUBLIC)
    # The web cluster is plain HTTP/1.1: no protocol options.
    web = config.split("  - name: web\n", 1)[1].split("  - name: ", 1)[0]
    assert "http2_protocol_options" not in web


def _listener(config: str, name: str) -> str:
    """One listener's block of the rendered config, up to the next listener or the clusters."""
    start = config.index(f"  - name: {name}\n")
    ends = [config.find(mark, start + 1) for mark in ("\n  - name: ", "\n  clusters:")]
    return config[start : min(end for end in ends if end != -1)]


def test_the_internal_listener_answers_each_clusters_health_itself_and_nothing_else() -> None:
    config = render(_inputs())
    internal = _listener(config, "internal")

    assert '{address: "0.0.0.0", port_value: 8090}' in internal
    filters = re.findall(
        r"- name: envoy\.filters\.http\.health_check\n"
        r"\s+typed_config:\n"
        r'\s+"@type": type\.googleapis\.com/envoy\.extensions\.filters\.http\.health_check\.v3\.HealthCheck\n'
        r"\s+pass_through_mode: false\n"
        r'\s+headers: \[\{name: ":path", string_match: \{exact: "([^"]+)"\}\}\]\n'
        r"\s+cluster_min_healthy_percentages:\n\s+(\w+): \{value: ([0-9.e-]+)\}",
        internal,
    )
    # Per cluster: every host healthy (HEALTHY), and at least one (else UNHEALTHY).
    assert filters == [
        (path, c, percent)
        for c in CLUSTERS
        for path, percent in ((f"/clusters/{c}/health", "100.0"), (f"/clusters/{c}/health/any", "1.0"))
    ]
    # Anything else on it is 404: the one route to a cluster is GET /stats/prometheus to
    # Envoy's own admin interface on loopback (Prometheus's way in).
    assert "direct_response: {status: 404}" in internal
    assert re.findall(r"cluster: (\w+)", internal) == ["envoy_admin"]
    assert re.search(
        r'path: "/stats/prometheus"\n\s+headers: \[\{name: ":method", string_match: \{exact: "GET"\}\}\]\n'
        r"\s+route: \{cluster: envoy_admin",
        internal,
    )
    admin_cluster = config[config.index("- name: envoy_admin") :].split("\n  - name:")[0]
    assert 'socket_address: {address: "127.0.0.1", port_value: 9901}' in admin_cluster
    # The public listener answers no cluster's health.
    assert "health_check.v3" not in _listener(config, "public")


def test_the_internal_listener_never_shares_the_public_listeners_port() -> None:
    with pytest.raises(ValueError, match="internal listener"):
        _inputs(internal=Address("0.0.0.0", 8080))
    with pytest.raises(ValueError, match="internal listener"):
        _inputs(internal=Address("127.0.0.1", 8080))


def test_the_local_stack_puts_the_internal_listener_on_loopback_at_its_own_port() -> None:
    stack = StackConfig(port_offset=3000)
    assert local_edge_inputs(stack).internal == Address(stack.host, stack.port("envoy_internal"))
    assert stack.port("envoy_internal") not in (stack.port("envoy_public"), stack.port("envoy_admin"))


def _cluster(config: str, name: str) -> str:
    start = config.index(f"\n  - name: {name}\n")
    end = config.find("\n  - name: ", start + 1)
    return config[start : end if end != -1 else len(config)]


def test_a_service_cluster_may_have_several_hosts_each_health_checked() -> None:
    hosts = (Address("10.0.0.1", 50053), Address("10.0.0.2", 50053))
    config = render(_inputs(svc_router=hosts))

    router = _cluster(config, "svc_router")
    endpoints = re.findall(r'socket_address: \{address: "([^"]+)", port_value: (\d+)\}', router)
    assert endpoints == [("10.0.0.1", "50053"), ("10.0.0.2", "50053")]
    assert "grpc_health_check: {}" in router
    # The others keep their one address.
    assert len(re.findall("socket_address", _cluster(config, "svc_history"))) == 1


@pytest.mark.parametrize("hosts", [(), (Address("10.0.0.1", 1), ("10.0.0.2", 1))])
def test_a_service_cluster_needs_at_least_one_address_and_only_addresses(hosts: tuple[object, ...]) -> None:
    with pytest.raises(TypeError, match="svc_router"):
        _inputs(svc_router=hosts)

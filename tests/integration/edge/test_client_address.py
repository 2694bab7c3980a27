"""Whom the edge names as the client, with and without a trusted proxy in front of Envoy.

svc_session records the address Envoy names in x-parley-client-address on each session, so
Register then ListSessions shows what the sign-in rate limits counted.
"""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
from collections.abc import Iterator

import grpc
import httpx
import pytest

from edge_proxy.render import Address, render
from parley.session.v1 import session_pb2 as pb
from parley_stack.servers.envoy import EnvoyServer, local_edge_inputs
from parley_stack.testing import LocalStack
from tests.integration.edge.grpc_web import call, client_from, random_loopback
from tests.integration.session.test_rls import _listener

pytestmark = pytest.mark.integration

SPOOFED_XFF = {"x-forwarded-for": "198.51.100.7, 203.0.113.5"}


@pytest.fixture(scope="module")
def stack(local_stack: LocalStack) -> LocalStack:
    local_stack.ensure("envoy")
    return local_stack


@pytest.fixture(scope="module")
def behind_a_load_balancer(
    stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, int]]:
    """A second Envoy from the same template that trusts one proxy hop, before svc_session."""
    folder = tmp_path_factory.mktemp("edge-hops")
    config, admin_file, log = folder / "envoy.yaml", folder / "admin", folder / "envoy.log"
    host = stack.config.host
    inputs = dataclasses.replace(
        local_edge_inputs(stack.config),
        listen=Address(host, 0),
        admin=Address(host, 0),
        svc_session=Address(*stack.endpoint("svc_session", "grpc")),
        xff_num_trusted_hops=1,
    )
    config.write_text(render(inputs))
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(EnvoyServer(stack.config).binary), "--config-path", str(config),
             "--admin-address-path", str(admin_file), "--disable-hot-restart", "--log-level", "warning"],
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        listen_host, port = _listener(process, admin_file, log).rsplit(":", 1)
        yield listen_host, int(port)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _session_addresses(client: httpx.Client, edge: tuple[str, int], headers: dict[str, str]) -> list[str]:
    """Register a new user through edge; the client address of each of its sessions."""
    service = "/parley.session.v1.SessionService"
    email = f"edge-{secrets.token_hex(6)}@parley.test"
    request = pb.RegisterRequest(email=email, password="behind the balancer", display_name="Edge")
    registered = call(client, edge, f"{service}/Register", request, headers)
    assert registered.code == grpc.StatusCode.OK, registered
    token = pb.RegisterResponse.FromString(registered.payload).credentials.access_token
    listed = call(
        client, edge, f"{service}/ListSessions", pb.ListSessionsRequest(parent="users/me"),
        {"authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert listed.code == grpc.StatusCode.OK, listed
    return [s.client_address for s in pb.ListSessionsResponse.FromString(listed.payload).sessions]


def test_behind_one_trusted_hop_the_client_is_the_address_the_proxy_appended(
    behind_a_load_balancer: tuple[str, int],
) -> None:
    # The load balancer appended 203.0.113.5 (whom it saw); 198.51.100.7 is the client's own claim.
    with client_from(random_loopback()) as client:
        addresses = _session_addresses(client, behind_a_load_balancer, SPOOFED_XFF)

    assert addresses == ["203.0.113.5"]


def test_behind_one_trusted_hop_a_request_without_xff_is_the_peer(
    behind_a_load_balancer: tuple[str, int],
) -> None:
    # Fewer XFF entries than trusted hops: Envoy falls back to the TCP peer. This is why such
    # an Envoy must be reachable only through its load balancer (docs/stack/envoy.md).
    source = random_loopback()
    with client_from(source) as client:
        addresses = _session_addresses(client, behind_a_load_balancer, {})

    assert addresses == [source]


def test_at_the_edge_xff_is_ignored_and_the_client_is_the_peer(stack: LocalStack) -> None:
    source = random_loopback()
    with client_from(source) as client:
        addresses = _session_addresses(client, stack.endpoint("envoy", "public"), SPOOFED_XFF)

    assert addresses == [source]

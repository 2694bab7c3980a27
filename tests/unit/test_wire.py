"""Wire helpers: resource names, and whose word the client address is taken on."""

from __future__ import annotations

import grpc
import pytest

from parley_core.errors import RpcError
from parley_core.wire import CLIENT_ADDRESS_HEADER, client_address, parse_name


class _Context:
    """Just the two ServicerContext methods client_address reads."""

    def __init__(self, peer: str, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self._peer, self._metadata = peer, metadata

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


def _address(peer: str, header: str | None = None, trusted: tuple[str, ...] = ()) -> str:
    metadata = ((CLIENT_ADDRESS_HEADER, header),) if header is not None else ()
    return client_address(_Context(peer, metadata), trusted)  # type: ignore[arg-type]


def test_the_peer_is_the_address_by_default() -> None:
    assert _address("ipv4:203.0.113.9:5512") == "203.0.113.9"
    assert _address("ipv6:[2001:db8::1]:443") == "2001:db8::1"


def test_a_header_from_an_untrusted_peer_is_ignored() -> None:
    assert _address("ipv4:203.0.113.9:5512", header="198.51.100.1") == "203.0.113.9"


def test_the_edge_names_the_client() -> None:
    assert _address("ipv4:10.0.0.5:40000", header="198.51.100.1", trusted=("10.0.0.5",)) == "198.51.100.1"


def test_a_trusted_network_covers_every_edge_pod_in_it() -> None:
    trusted = ("10.244.0.0/16", "fd00::/8")
    assert _address("ipv4:10.244.3.7:40000", header="198.51.100.1", trusted=trusted) == "198.51.100.1"
    assert _address("ipv6:[fd00::5]:40000", header="198.51.100.2", trusted=trusted) == "198.51.100.2"
    # Outside the network, or a peer that is no address at all: the header is ignored.
    assert _address("ipv4:10.245.0.1:40000", header="198.51.100.1", trusted=trusted) == "10.245.0.1"
    assert _address("unix:/tmp/sock", header="198.51.100.1", trusted=trusted) == "unix:/tmp/sock"
    # A host name in the setting never matches; a bad entry is skipped, not fatal.
    odd = ("edge.local", "nonsense/99")
    assert _address("ipv4:10.0.0.5:1", header="198.51.100.1", trusted=odd) == "10.0.0.5"


def test_resource_names_are_parsed_or_refused() -> None:
    assert parse_name("users/u1/sessions/s-2", "users/{user}/sessions/{session}", "name") == {
        "user": "u1",
        "session": "s-2",
    }
    with pytest.raises(RpcError) as caught:
        parse_name("users/u1/sessions/../x", "users/{user}/sessions/{session}", "name")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.field_violations[0].field == "name"

"""Small conversions between the wire and plain Python used by every servicer."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Collection
from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from parley_core.errors import FieldViolation, invalid_argument

__all__ = [
    "CLIENT_ADDRESS_HEADER",
    "client_address",
    "from_timestamp",
    "parse_name",
    "timestamp",
    "user_agent",
]


def timestamp(value: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp, or None (an unset field) for None."""
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def from_timestamp(value: Timestamp, present: bool) -> datetime | None:
    """An aware datetime for a set Timestamp field, None for an unset one."""
    return value.ToDatetime(tzinfo=UTC) if present else None


def parse_name(name: str, pattern: str, field: str) -> dict[str, str]:
    """Split a resource name such as users/{user}/sessions/{session} into its ids.

    Ids are 1 to 64 characters of letters, digits, '-' and '_'; anything else is
    INVALID_ARGUMENT naming the field.
    """
    regex = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[A-Za-z0-9_-]{1,64})", re.escape(pattern)) + "$"
    match = re.match(regex, name)
    if match is None:
        raise invalid_argument([FieldViolation(field, f"must look like {pattern}")])
    return match.groupdict()


#: Set by Parley's edge (Envoy overwrites whatever a client sent) to the client's address.
CLIENT_ADDRESS_HEADER = "x-parley-client-address"


def client_address(
    context: grpc.aio.ServicerContext[object, object], trusted_proxies: Collection[str] = ()
) -> str:
    """The caller's IP address.

    It is the connection's peer, unless that peer is one of trusted_proxies (the edge), in
    which case the edge's CLIENT_ADDRESS_HEADER names the client. A header from anyone else
    is ignored, so a client cannot choose its own address. An entry of trusted_proxies is an
    address or a network (`10.0.0.0/8`: the edge's pods, whose addresses change).
    """
    peer = _peer_address(context.peer() or "")
    if _trusted(peer, tuple(trusted_proxies)):
        for key, value in context.invocation_metadata() or ():
            if key == CLIENT_ADDRESS_HEADER and isinstance(value, str) and value.strip():
                return value.strip()
    return peer


def _trusted(peer: str, trusted_proxies: tuple[str, ...]) -> bool:
    if peer in trusted_proxies:
        return True
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in _networks(trusted_proxies))


@functools.lru_cache(maxsize=16)
def _networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The entries that are networks (or single addresses), parsed once per setting."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            continue  # a host name never matches a peer address
    return tuple(networks)


def _peer_address(peer: str) -> str:
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer or "unknown"


def user_agent(context: grpc.aio.ServicerContext[object, object]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "user-agent" and isinstance(value, str):
            return value
    return ""

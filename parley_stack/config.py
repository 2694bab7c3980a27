"""Where the local stack lives and which ports it listens on.

Every port has a default in one window of 100 ports; `PARLEY_STACK_PORT_OFFSET` (a
multiple of 100) shifts all of them at once, so a test session can run a second stack
beside a developer's, and
`PARLEY_STACK_PORTS='{"redis": 7000}'` overrides single ports.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent

#: The first port of the default stack. Every port lies in [BASE_PORT, BASE_PORT + 100), so
#: stacks whose offsets differ by a multiple of 100 never share a port.
BASE_PORT = 20000
PORT_WINDOW = 100

#: Each server's port as an offset from the stack's base port.
DEFAULT_PORTS: dict[str, int] = {
    name: BASE_PORT + slot
    for name, slot in {
        "envoy_public": 0,  # the public endpoint: gRPC, gRPC-Web and the web pages
        "envoy_admin": 1,
        "web_http": 2,  # the web app's static files (web/dist), behind Envoy
        "envoy_internal": 3,  # the clusters' health, for svc_ledger: never public
        "session_grpc": 10,
        "history_grpc": 11,
        "router_grpc": 12,
        "ledger_grpc": 13,
        "session_metrics": 20,
        "history_metrics": 21,
        "router_metrics": 22,
        "ledger_metrics": 23,
        "indexer_metrics": 24,  # svc_history's search indexer
        "session_jwks": 30,
        "session_internal": 31,  # rate limits for the edge, service tokens: never public
        "redis": 40,
        "cassandra_cql": 42,
        "cassandra_storage": 43,
        "pulsar": 50,
        "pulsar_http": 51,
        "pulsar_bookie": 52,  # Apache Pulsar standalone only (its one bookie)
        "weaviate_http": 60,
        "weaviate_grpc": 61,
        "weaviate_gossip": 62,  # and the next port (data)
        "weaviate_raft": 64,  # and the next port (raft rpc)
        "triton_http": 70,
        "triton_grpc": 71,
        "triton_metrics": 72,
        "llama_http": 73,  # llama-cpp-python's OpenAI-compatible server
        "jaeger_otlp": 80,  # OTLP over gRPC: the services' and Envoy's spans
        "jaeger_otlp_http": 81,  # OTLP over HTTP: Triton's spans
        "jaeger_query": 82,  # the query API (JSON over HTTP)
        "jaeger_query_grpc": 83,
        "jaeger_health": 84,
    }.items()
}


class StackConfig(BaseSettings):
    """Settings of the local stack, read from `PARLEY_STACK_*` variables."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_STACK_")

    state_dir: Path = REPO_ROOT / ".state"
    host: str = "127.0.0.1"
    #: Shifts every port; a multiple of 100 (tests use 1000, a developer's stack 0).
    port_offset: int = Field(default=0, ge=0, multiple_of=PORT_WINDOW)
    ports: dict[str, int] = Field(default_factory=dict)
    cassandra_nodes: int = 1
    #: Cassandra asks clients to sign in (PasswordAuthenticator, its default superuser
    #: cassandra/cassandra, which the stack's services are then given), as cass-operator's
    #: datacenters do. Off by default: the default stack runs without authentication.
    cassandra_auth: bool = False
    #: The data centre the nodes name themselves (GossipingPropertyFileSnitch), as a
    #: CassandraDatacenter's nodes do; empty: SimpleSnitch's `datacenter1`.
    cassandra_dc: str = ""
    pulsar: str = "lite"  # "lite" (pulsar-lite) or "apache" (Apache Pulsar standalone)

    def port(self, name: str) -> int:
        """The port `name` listens on, after overrides and the offset."""
        if name in self.ports:
            return self.ports[name]
        return DEFAULT_PORTS[name] + self.port_offset

    @property
    def cache_dir(self) -> Path:
        """Downloads and builds, shared by every stack that uses this state folder."""
        return self.state_dir / "cache"

    @property
    def run_dir(self) -> Path:
        """Per-stack data, logs and pid files; one folder per port offset."""
        return self.state_dir / "run" / f"offset-{self.port_offset}"

    def data_dir(self, name: str) -> Path:
        path = self.run_dir / "data" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log_path(self, name: str) -> Path:
        path = self.run_dir / "logs" / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

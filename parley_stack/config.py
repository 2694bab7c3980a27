"""Where the local stack lives and which ports it listens on.

Every port has a default; `PARLEY_STACK_PORT_OFFSET` shifts all of them at once, so a
test session can run a second stack beside a developer's, and
`PARLEY_STACK_PORTS='{"redis": 7000}'` overrides single ports.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_PORTS: dict[str, int] = {
    "redis": 16379,
    "cassandra_cql": 19042,
    "cassandra_storage": 17000,
    "pulsar": 16650,
    "pulsar_http": 18081,
    "pulsar_bookie": 13181,  # Apache Pulsar standalone only (its one bookie)
    "weaviate_http": 18080,
    "weaviate_grpc": 15051,
    "weaviate_gossip": 17946,  # and the next port (data)
    "weaviate_raft": 18300,  # and the next port (raft rpc)
    "triton_http": 18000,
    "triton_grpc": 18001,
    "triton_metrics": 18002,
    "envoy_public": 18443,
    "envoy_admin": 19901,
    "session_grpc": 17101,
    "history_grpc": 17102,
    "router_grpc": 17103,
    "ledger_grpc": 17104,
    "session_metrics": 17201,
    "history_metrics": 17202,
    "router_metrics": 17203,
    "ledger_metrics": 17204,
    "session_jwks": 17301,
}


class StackConfig(BaseSettings):
    """Settings of the local stack, read from `PARLEY_STACK_*` variables."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_STACK_")

    state_dir: Path = REPO_ROOT / ".state"
    host: str = "127.0.0.1"
    port_offset: int = 0
    ports: dict[str, int] = Field(default_factory=dict)
    cassandra_nodes: int = 1
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

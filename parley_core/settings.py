"""Settings common to every service; each service subclasses with its own env prefix."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["CassandraSettings", "DataServiceSettings", "ServiceSettings"]


class ServiceSettings(BaseSettings):
    """Where a service listens and how it reports. Read once at start-up, then passed down."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore")

    host: str = "127.0.0.1"
    #: The gRPC port; 0 picks a free one (tests).
    port: int = 0
    #: The Prometheus metrics port; 0 picks a free one, -1 turns the endpoint off.
    metrics_port: int = 0
    #: "json" (one JSON object per line) or "console" (readable, for a terminal).
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: How long in-flight calls may finish after a shutdown signal, in seconds.
    shutdown_grace_s: float = 10.0
    #: How long the health status shows NOT_SERVING before the server stops accepting, so
    #: load balancers notice first.
    drain_delay_s: float = 0.0
    #: The most calls served at once; grpc answers calls over it with RESOURCE_EXHAUSTED, so
    #: an overload sheds load at the door instead of queueing without bound.
    max_concurrent_rpcs: int = Field(default=1000, ge=1)
    #: Where spans go: an OTLP/gRPC collector (`host:port` or `http://host:port`). Empty
    #: (the default): no span is exported; the trace context is still passed on.
    otlp_endpoint: str = ""

    @property
    def service_name(self) -> str:
        """The process's `service.name` in traces: svc_<key> after the env prefix
        (PARLEY_ROUTER_ -> svc_router)."""
        prefix = str(self.model_config.get("env_prefix", "PARLEY_"))
        key = prefix.removeprefix("PARLEY_").strip("_").lower()
        return f"svc_{key}" if key else "parley"


class CassandraSettings(BaseModel):
    """Where a service's Cassandra is and whom it signs in as. Mixed into the settings of
    every service that keeps a keyspace, so it is read under that service's env prefix
    (PARLEY_HISTORY_CASSANDRA_USERNAME, ...); parley_core.cassandra.connect_to opens it."""

    cassandra_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    cassandra_port: int = 20042
    #: The role the service signs in as (Cassandra's PasswordAuthenticator), with its
    #: password; both or neither. Empty (the local stack): no authentication. In Kubernetes
    #: both come from a Secret (docs/adr/0019-kubernetes.md).
    cassandra_username: str = ""
    cassandra_password: SecretStr = SecretStr("")
    #: The data centre whose nodes serve the requests (LOCAL_QUORUM counts its replicas);
    #: empty: the contact points' own, which is right when `cassandra_hosts` name this
    #: region's nodes. Keyspaces are created with replicas in the same data centre.
    cassandra_local_dc: str = ""


class DataServiceSettings(ServiceSettings, CassandraSettings):
    """A service that keeps a Cassandra keyspace of its own (with its events outbox), uses
    Redis, publishes to Pulsar and verifies users' and services' tokens (svc_history,
    svc_router). Each subclass sets its env prefix and its keyspace's name."""

    #: The service's own keyspace (never shared with another service).
    keyspace: str
    #: Replicas per data centre when the keyspace is created (3 in production).
    replication_factor: int = 1
    redis_url: str = "redis://127.0.0.1:20040/0"
    #: Every Redis call gives up after this long (connect and each command).
    redis_timeout_s: float = 1.0
    #: Redis connections at once; a call beyond them waits for one (up to redis_timeout_s).
    redis_max_connections: int = Field(default=512, gt=0)
    pulsar_url: str = "pulsar://127.0.0.1:20050"
    #: How often the outbox relay looks for events it was not told about (another
    #: replica's, or ones a Pulsar outage left behind).
    outbox_poll_s: float = 2.0
    #: The longest the relay waits between tries while Pulsar is unreachable.
    outbox_max_backoff_s: float = 30.0
    #: How long Pulsar may take to acknowledge one event.
    outbox_send_timeout_s: float = 10.0

    #: svc_session's JWKS, whose keys sign users' and services' tokens.
    jwks_url: str = "http://127.0.0.1:20030/.well-known/jwks.json"
    #: JWT `iss` and `aud` of users' access tokens.
    issuer: str = "https://parley.local/session"
    audience: str = "parley"
    #: JWT `aud` of service tokens (internal calls such as AppendMessage).
    internal_audience: str = "parley-internal"

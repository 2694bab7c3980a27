"""svc_ledger's settings, from `PARLEY_LEDGER_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from parley_core.settings import DataServiceSettings

_REPOSITORY = Path(__file__).resolve().parent.parent


class HealthSettings(BaseModel):
    """Where GetSystemHealth probes the platform (`PARLEY_LEDGER_HEALTH__*`). An empty value
    leaves that probe unconfigured: its component is UNKNOWN, "not configured"."""

    #: Each service's gRPC address (`host:port`), asked `grpc.health.v1` Check, by name
    #: ("svc_session", ..., svc_ledger's own included).
    services: dict[str, str] = Field(default_factory=dict)
    #: The search indexer's Prometheus endpoint (`http://host:port/metrics`): it serves no
    #: gRPC, so it is alive while its gauge says it holds its subscription.
    indexer_metrics_url: str = ""
    #: Envoy's internal listener (`http://host:port`), which answers each cluster's health
    #: (edge_proxy's `/clusters/{cluster}/health`); never Envoy's admin interface.
    edge_url: str = ""
    #: The edge's service clusters asked about.
    edge_clusters: list[str] = Field(
        default_factory=lambda: ["svc_session", "svc_history", "svc_router", "svc_ledger"]
    )
    #: Triton's HTTP endpoint (`http://host:port`), whose repository index says which models
    #: are ready.
    triton_url: str = ""
    #: Pulsar's admin REST API (`http://host:port`), for the search indexer's backlog.
    pulsar_admin_url: str = ""
    #: The search indexer's subscription (svc_history's `search.subscription`).
    index_subscription: str = "search-indexer"
    #: A backlog above this many events makes the search index DEGRADED.
    index_backlog_degraded: int = Field(default=1000, ge=0)
    #: The longest one probe may take (less when the caller's deadline is nearer).
    probe_timeout_s: float = Field(default=1.0, gt=0)


class LedgerSettings(DataServiceSettings):
    """Everything svc_ledger reads from its environment, read once at start-up."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_LEDGER_", env_nested_delimiter="__", extra="ignore")

    keyspace: str = "parley_ledger"
    #: The model catalog, whose prices the ledger bills at.
    catalog_path: Path = _REPOSITORY / "model_repo" / "catalog.toml"
    #: A new price version whose effective time is this far in the past is still accepted
    #: (clock skew between whoever wrote the catalog and the ledger).
    price_grace_s: float = Field(default=300.0, ge=0)

    #: The Key_Shared subscription every ledger instance joins.
    subscription: str = "ledger"
    #: Where a subscription that does not exist yet starts: "earliest" bills every event the
    #: topic still holds (a new deployment); "latest" only what comes after.
    subscribe_from: Literal["earliest", "latest"] = "earliest"
    #: How long start-up waits for the subscription before serving without it.
    subscribe_wait_s: float = Field(default=10.0, ge=0)
    #: The most events priced and written together.
    batch_size: int = Field(default=500, ge=1, le=5000)
    #: A failed event is retried after this, doubled on each redelivery, up to retry_max_s.
    retry_base_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=300.0, gt=0)
    #: After this many redeliveries an event goes to the dead-letter topic.
    max_redeliveries: int = Field(default=12, ge=1)

    #: How often the ledger checks that Redis still holds the budgets' state (and rebuilds
    #: it when not), and copies the budgets' limits to Redis again.
    budget_check_s: float = Field(default=1.0, gt=0)
    budget_sync_s: float = Field(default=60.0, gt=0)

    #: What GetSystemHealth probes.
    health: HealthSettings = Field(default_factory=HealthSettings)

"""svc_ledger's settings, from `PARLEY_LEDGER_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from parley_core.settings import DataServiceSettings

_REPOSITORY = Path(__file__).resolve().parent.parent


class LedgerSettings(DataServiceSettings):
    """Everything svc_ledger reads from its environment, read once at start-up."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_LEDGER_", extra="ignore")

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

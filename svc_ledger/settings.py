"""svc_ledger's settings, from `PARLEY_LEDGER_*` environment variables."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from parley_core.settings import ServiceSettings


class LedgerSettings(ServiceSettings):
    """Everything svc_ledger reads from its environment, read once at start-up."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_LEDGER_", extra="ignore")

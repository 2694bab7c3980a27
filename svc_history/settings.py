"""svc_history's settings, from `PARLEY_HISTORY_*` environment variables."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from parley_core.settings import ServiceSettings


class HistorySettings(ServiceSettings):
    """Everything svc_history reads from its environment, read once at start-up."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_HISTORY_", extra="ignore")

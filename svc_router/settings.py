"""svc_router's settings, from `PARLEY_ROUTER_*` environment variables."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from parley_core.settings import ServiceSettings


class RouterSettings(ServiceSettings):
    """Everything svc_router reads from its environment, read once at start-up."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_ROUTER_", extra="ignore")

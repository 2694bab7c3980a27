"""svc_session's settings, from `PARLEY_SESSION_*` environment variables."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from parley_core.settings import ServiceSettings


class SessionSettings(ServiceSettings):
    """Everything svc_session reads from its environment, read once at start-up."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_SESSION_", extra="ignore")

"""Settings common to every service; each service subclasses with its own env prefix."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ServiceSettings"]


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

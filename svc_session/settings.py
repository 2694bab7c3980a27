"""svc_session's settings, from `PARLEY_SESSION_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from parley_core.settings import ServiceSettings


class BucketSize(BaseModel):
    """A token bucket: `capacity` requests at once, refilled at `refill_per_s`."""

    capacity: int = Field(gt=0)
    refill_per_s: float = Field(gt=0)


def _default_tiers() -> dict[str, BucketSize]:
    return {
        "free": BucketSize(capacity=30, refill_per_s=0.5),
        "pro": BucketSize(capacity=120, refill_per_s=2.0),
        "enterprise": BucketSize(capacity=600, refill_per_s=10.0),
    }


class SessionSettings(ServiceSettings):
    """Everything svc_session reads from its environment, read once at start-up."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_SESSION_", env_nested_delimiter="__", extra="ignore")

    cassandra_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    cassandra_port: int = 20042
    keyspace: str = "parley"
    #: Replicas per data centre when the keyspace is created (3 in production).
    replication_factor: int = 1
    redis_url: str = "redis://127.0.0.1:20040/0"

    #: JWT `iss` and `aud`; every service verifies both.
    issuer: str = "https://parley.local/session"
    audience: str = "parley"
    access_token_ttl_s: int = 15 * 60
    refresh_token_ttl_s: int = 30 * 24 * 3600
    #: A new signing key every this many seconds; the previous one stays in the JWKS for
    #: at least one access-token lifetime, so tokens it signed keep verifying.
    key_rotation_s: int = 24 * 3600
    password_reset_ttl_s: int = 30 * 60
    #: Port of the JWKS HTTP endpoint (`/.well-known/jwks.json`) for Envoy's jwt_authn.
    jwks_port: int = 0
    #: In development, password reset mails are delivered as files here (the outbox's
    #: dev mailbox); empty in production, where a mail relay drains the outbox.
    dev_mailbox_dir: Path | None = None
    #: Tier given to new accounts.
    default_tier: str = "free"
    #: Request buckets per tier (per user), per API key, and per client address and email
    #: for the sign-in methods that attract guessing.
    tiers: dict[str, BucketSize] = Field(default_factory=_default_tiers)
    api_key_bucket: BucketSize = BucketSize(capacity=300, refill_per_s=5.0)
    auth_address_bucket: BucketSize = BucketSize(capacity=20, refill_per_s=0.2)
    auth_email_bucket: BucketSize = BucketSize(capacity=5, refill_per_s=1 / 60)
    #: Peers whose `x-parley-client-address` header is believed (the edge proxies); the
    #: sign-in buckets then count the client's address instead of the proxy's.
    trusted_proxies: list[str] = Field(default_factory=list)
    #: Emails that become admins when they register (bootstrap of the first operator).
    admin_emails: list[str] = Field(default_factory=list)

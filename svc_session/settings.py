"""svc_session's settings, from `PARLEY_SESSION_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from parley_core.ratelimit import BucketSize
from parley_core.settings import CassandraSettings, ServiceSettings

__all__ = ["BucketSize", "SessionSettings"]


def _default_tiers() -> dict[str, BucketSize]:
    return {
        "free": BucketSize(capacity=30, refill_per_s=0.5),
        "pro": BucketSize(capacity=120, refill_per_s=2.0),
        "enterprise": BucketSize(capacity=600, refill_per_s=10.0),
    }


class SessionSettings(ServiceSettings, CassandraSettings):
    """Everything svc_session reads from its environment, read once at start-up."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_SESSION_", env_nested_delimiter="__", extra="ignore")

    keyspace: str = "parley"
    #: Replicas per data centre when the keyspace is created (3 in production).
    replication_factor: int = 1
    redis_url: str = "redis://127.0.0.1:20040/0"
    #: Pulsar, for the `user-deleted` events that erase accounts; None runs no consumer.
    pulsar_url: str | None = None
    #: Every Redis call gives up after this long (connect and each command).
    redis_timeout_s: float = 1.0

    #: JWT `iss` and `aud`; every service verifies both.
    issuer: str = "https://parley.local/session"
    audience: str = "parley"
    access_token_ttl_s: int = 15 * 60
    refresh_token_ttl_s: int = 30 * 24 * 3600
    #: A new signing key every this many seconds; the previous one stays in the JWKS for
    #: at least one access-token lifetime, so tokens it signed keep verifying.
    key_rotation_s: int = 24 * 3600
    #: A new key is published this long before it signs anything, so every JWKS cache
    #: (`jwks_max_age_s`, Envoy's, other services') holds it before the first token needs it.
    key_publish_lead_s: int = 6 * 60
    #: How long clients may cache the JWKS (its Cache-Control max-age).
    jwks_max_age_s: int = 5 * 60
    #: The key-encryption key (32 random bytes, base64url) that wraps the signing keys at
    #: rest; in production it comes from a KMS-backed secret (docs/adr/0006). Required.
    key_encryption_key: SecretStr | None = None
    password_reset_ttl_s: int = 30 * 60
    #: How long a verification link works.
    email_verification_ttl_s: int = 48 * 3600
    #: An account whose email stays unverified this many days is deleted, freeing the email.
    unverified_account_days: float = Field(default=7, gt=0)
    #: A refresh token presented again within this many seconds of its first use (a retry
    #: after a timeout) gets the same new credentials; after it, a reuse ends the session.
    refresh_reuse_grace_s: int = 10
    #: Port of the JWKS HTTP endpoint (`/.well-known/jwks.json`) for Envoy's jwt_authn.
    jwks_port: int = 0
    #: The internal listener: Envoy's rate limit service and service identity. Only the
    #: edge and Parley's services may reach it (loopback here, a NetworkPolicy in
    #: Kubernetes). 0 picks a free port.
    internal_host: str = "127.0.0.1"
    internal_port: int = 0
    #: The audience of service tokens (internal calls); never the same as `audience`.
    internal_audience: str = "parley-internal"
    service_token_ttl_s: int = 10 * 60
    #: Parley's services that may get a service token: name -> SHA-256 (hex) of its secret.
    #: The secrets are 256-bit random strings, so a fast hash is enough.
    service_credentials: dict[str, str] = Field(default_factory=dict)
    #: Where people open Parley; mailed links (verification, reset) point here.
    public_url: str = "http://127.0.0.1:20000"
    #: In development, mails are delivered as files here (the outbox's dev mailbox); empty
    #: in production, where a mail relay drains the outbox.
    dev_mailbox_dir: Path | None = None
    #: How often the outbox relay looks for mail it was not told about (another replica's).
    mail_poll_s: float = 2.0
    #: Tier given to new accounts.
    default_tier: str = "free"
    #: Request buckets per tier (per user), per API key, and per client address and email
    #: for the sign-in methods that attract guessing.
    tiers: dict[str, BucketSize] = Field(default_factory=_default_tiers)
    api_key_bucket: BucketSize = BucketSize(capacity=300, refill_per_s=5.0)
    auth_address_bucket: BucketSize = BucketSize(capacity=20, refill_per_s=0.2)
    #: The strict per-email bucket counts one email from one address, so a stranger
    #: cannot keep the owner (elsewhere) out; the loose per-email bucket is a backstop
    #: against guessing one password from many addresses.
    auth_email_address_bucket: BucketSize = BucketSize(capacity=5, refill_per_s=1 / 60)
    auth_email_bucket: BucketSize = BucketSize(capacity=100, refill_per_s=100 / 3600)
    #: Per client address, for the edge's routine calls without a token (RefreshToken,
    #: VerifyEmail, shared pages): roomy enough for an office behind one NAT, a wall
    #: against a flood of made-up tokens from one address.
    anonymous_address_bucket: BucketSize = BucketSize(capacity=300, refill_per_s=5.0)
    #: Peers whose `x-parley-client-address` header is believed (the edge proxies); the
    #: sign-in buckets then count the client's address instead of the proxy's.
    trusted_proxies: list[str] = Field(default_factory=list)

"""svc_router's settings, from `PARLEY_ROUTER_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from parley_core.ratelimit import BucketSize
from parley_core.settings import DataServiceSettings

REPO_ROOT = Path(__file__).resolve().parent.parent


class OpenAIEndpoint(BaseModel):
    """An OpenAI-compatible server that catalog backends of kind "openai" name."""

    #: The API root, for example "http://127.0.0.1:20073/v1".
    base_url: str
    #: Sent as `Authorization: Bearer ...`; None sends no header (a local server).
    api_key: SecretStr | None = None


class TierLimits(BaseModel):
    """What one user of a tier may start: turns per bucket and model tokens per bucket."""

    #: Turns started by one user.
    turns: BucketSize = BucketSize(capacity=20, refill_per_s=20 / 60)
    #: Tokens (prompt and answer, as the models count them) used by one user.
    tokens: BucketSize = BucketSize(capacity=200_000, refill_per_s=200_000 / 86_400)
    #: Turns started by every user of the tier together (what the tier's share of the
    #: backends holds).
    tier_turns: BucketSize = BucketSize(capacity=10_000, refill_per_s=100.0)


class BreakerSettings(BaseModel):
    """One circuit breaker per backend (docs/adr/0011-chat-turn.md)."""

    #: Failures in a row before first tokens that open the breaker.
    failure_threshold: int = Field(default=3, ge=1)
    #: How long an open breaker refuses before it lets one trial request through.
    open_s: float = Field(default=10.0, gt=0)


class RouterSettings(DataServiceSettings):
    """Everything svc_router reads from its environment, read once at start-up."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_ROUTER_", env_nested_delimiter="__", extra="ignore")

    #: The router's own keyspace: its outbox of TurnCompleted events.
    keyspace: str = "parley_router"
    redis_timeout_s: float = 2.0
    #: svc_session's internal listener, where this service trades its secret for a token.
    identity_target: str = "127.0.0.1:20031"
    #: This service's secret for service tokens (docs/adr/0009). Required.
    service_secret: SecretStr | None = None
    history_target: str = "127.0.0.1:20011"
    #: Each call to svc_history gives up after this long.
    history_timeout_s: float = Field(default=5.0, gt=0)
    #: Triton's gRPC endpoint and the OpenAI-compatible endpoints catalog backends name.
    triton_target: str = "127.0.0.1:20071"
    openai_endpoints: dict[str, OpenAIEndpoint] = Field(default_factory=dict)
    #: Streams open at once to the OpenAI-compatible endpoints (each holds a connection).
    openai_max_connections: int = Field(default=2000, gt=0)
    #: The model catalog (docs/adr/0010-model-catalog.md).
    catalog_path: Path = REPO_ROOT / "model_repo" / "catalog.toml"

    # The turn -------------------------------------------------------------------------
    #: The longest a user message may be, in characters (the contract allows 100000).
    message_chars: int = Field(default=32_000, gt=0)
    #: A backend that sends no first token within this long has failed (the next one is tried).
    first_token_timeout_s: float = Field(default=15.0, gt=0)
    #: A model's token counter (a Triton model) that takes longer has failed: the turn
    #: counts with an upper bound instead (docs/adr/0011).
    count_timeout_s: float = Field(default=2.0, gt=0)
    #: A backend that sends nothing for this long after its first token has failed the turn.
    inter_token_timeout_s: float = Field(default=30.0, gt=0)
    #: The longest a whole answer may stream.
    turn_timeout_s: float = Field(default=600.0, gt=0)
    #: How long a turn's budget reservation holds when the ledger never settles it (a router
    #: died, the usage event was lost); longer than turn_timeout_s. 0: turn_timeout_s + 300.
    budget_hold_s: float = Field(default=0.0, ge=0)
    #: Pieces that arrive within this many milliseconds of the first become one delta; 0
    #: sends every piece as it comes (docs/adr/0011: backpressure).
    coalesce_ms: float = Field(default=0.0, ge=0)
    #: Events one stream may have waiting; a stream that falls further behind reads from
    #: the turn log instead, so the turn never waits for it.
    client_buffer_events: int = Field(default=256, ge=1)
    #: How long a turn whose every stream went away keeps running for a resume before it is
    #: cancelled.
    abandon_grace_s: float = Field(default=15.0, ge=0)
    #: The turn log (Redis Streams): kept this long after a turn's last event, at most this
    #: many events per turn.
    turn_log_ttl_s: int = Field(default=3600, gt=0)
    turn_log_max_events: int = Field(default=20_000, gt=0)
    #: A running turn renews its lease this often; a turn whose lease is older than
    #: lease_s has lost its router (ResumeTurn then ends it as failed).
    lease_s: float = Field(default=5.0, gt=0)
    #: How long an idempotency key keeps naming its turn.
    idempotency_ttl_s: int = Field(default=24 * 3600, gt=0)
    #: The system prompt of a conversation that sets none; empty: none.
    default_system_prompt: str = ""
    #: Per-tier admission; a tier not listed gets "free".
    tiers: dict[str, TierLimits] = Field(
        default_factory=lambda: {
            "free": TierLimits(),
            "pro": TierLimits(
                turns=BucketSize(capacity=120, refill_per_s=2.0),
                tokens=BucketSize(capacity=2_000_000, refill_per_s=2_000_000 / 86_400),
            ),
        }
    )
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    #: How often backend health is probed for ListModels.
    health_interval_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _hold_outlives_the_turn(self) -> RouterSettings:
        if self.budget_hold_s == 0:
            self.budget_hold_s = self.turn_timeout_s + 300
        elif self.budget_hold_s <= self.turn_timeout_s:
            raise ValueError(
                f"budget_hold_s ({self.budget_hold_s}) must be longer than turn_timeout_s "
                f"({self.turn_timeout_s}): a reservation must outlive the turn it holds for"
            )
        return self

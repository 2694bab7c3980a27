"""svc_history's settings, from `PARLEY_HISTORY_*` environment variables."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from parley_core.ratelimit import BucketSize
from parley_core.settings import DataServiceSettings


class Limits(BaseModel):
    """What one user may store; requests over a limit are INVALID_ARGUMENT and change nothing."""

    #: Characters of one message's text.
    message_chars: int = Field(default=32_000, gt=0)
    #: Messages in one conversation (every branch counted).
    messages_per_conversation: int = Field(default=100_000, gt=0)
    title_chars: int = Field(default=200, gt=0)
    #: Characters of one tag (the contract says 1 to 40) and tags per conversation (20).
    tag_chars: int = Field(default=40, gt=0)
    tags_per_conversation: int = Field(default=20, ge=0)
    folder_chars: int = Field(default=200, gt=0)
    model_chars: int = Field(default=128, gt=0)
    system_prompt_chars: int = Field(default=16_000, gt=0)
    turn_chars: int = Field(default=256, gt=0)
    #: A share link's snapshot holds at most this many messages (GetSharedConversation
    #: returns them in one response).
    shared_messages: int = Field(default=2_000, gt=0)
    #: Characters of a share link's password.
    share_password_chars: int = Field(default=256, gt=0)


class HistorySettings(DataServiceSettings):
    """Everything svc_history reads from its environment, read once at start-up."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_HISTORY_", env_nested_delimiter="__", extra="ignore")

    keyspace: str = "parley_history"

    #: How long past its `exp` a user's token is still taken when a service calls for the
    #: user (a chat turn stores its answer up to svc_router's turn_timeout_s after the
    #: token was checked); revocations still apply. Users' own calls get no such leeway.
    on_behalf_leeway_s: int = Field(default=15 * 60, ge=0)

    #: The key (32 random bytes, base64url) that signs page tokens and seals share tokens
    #: kept for retried creates. Every replica must have the same one. Required.
    page_token_key: SecretStr | None = None

    #: Messages per partition of the messages table: a conversation's messages are spread
    #: over buckets of this many, so no partition grows with the conversation. Fixed once
    #: data exists (docs/adr/0008-history.md).
    message_bucket_size: int = Field(default=500, gt=0)
    #: How long a request_id is remembered for idempotent creates and appends.
    request_id_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    limits: Limits = Field(default_factory=Limits)

    #: Password guesses at one share link from one client address, and from anywhere.
    share_password_address_bucket: BucketSize = BucketSize(capacity=5, refill_per_s=1 / 60)
    share_password_link_bucket: BucketSize = BucketSize(capacity=100, refill_per_s=100 / 3600)
    #: Peers whose `x-parley-client-address` header is believed (the edge proxies).
    trusted_proxies: list[str] = Field(default_factory=list)

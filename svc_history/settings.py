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


class SearchSettings(BaseModel):
    """Search: Weaviate (the index), Triton (the embedding model), the indexer's subscription."""

    #: Weaviate's REST and gRPC endpoints (the Python client needs both).
    weaviate_host: str = "127.0.0.1"
    weaviate_http_port: int = Field(default=8080, gt=0)
    weaviate_grpc_port: int = Field(default=50051, gt=0)
    #: The collection of message objects. A new embedding model gets a new collection
    #: (filled by `python -m svc_history reindex --all`), then this setting moves to it.
    collection: str = "Message_minilm_l6"
    #: Triton's gRPC endpoint and the embedding model on it (model_repo/minilm-l6).
    triton_target: str = "127.0.0.1:8001"
    embedding_model: str = "minilm-l6"
    embedding_dimensions: int = Field(default=384, gt=0)
    #: Texts per request to the embedding model (its max_batch_size).
    embedding_batch: int = Field(default=64, gt=0)
    #: Characters of a query (the contract says 1 to 500).
    query_chars: int = Field(default=500, gt=0)
    #: Hits a search can page through; deeper pages end the listing.
    max_results: int = Field(default=1000, gt=0)
    #: SEMANTIC and HYBRID leave out messages farther than this (cosine distance, 0..2)
    #: from the query: without it, every message would be a hit, the last ones unrelated.
    max_vector_distance: float = Field(default=0.8, gt=0, le=2)
    #: HYBRID: 0 is words only, 1 meaning only.
    hybrid_alpha: float = Field(default=0.5, ge=0, le=1)
    #: Seconds one call to Weaviate or Triton may take while a user waits (SearchMessages).
    call_timeout_s: float = Field(default=5.0, gt=0)
    #: Seconds the indexer gives Triton to embed one batch (64 texts take ~1 s on 2 idle
    #: cores, many more under load; a timeout retries the whole batch).
    embed_batch_timeout_s: float = Field(default=120.0, gt=0)
    #: The indexer: its Pulsar subscription (shared by its replicas), events per batch,
    #: and its retry backoff when Weaviate, Triton or Cassandra fail.
    subscription: str = "search-indexer"
    subscribe_from: str = Field(default="earliest", pattern="^(earliest|latest)$")
    batch_size: int = Field(default=64, gt=0)
    retry_base_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=60.0, gt=0)
    #: Pulsar's admin REST API (production): where the indexer reads its backlog for the
    #: events-behind metric. Empty: only the events it holds are counted (pulsar-lite has
    #: no admin API).
    pulsar_admin_url: str = ""
    #: The indexer's Prometheus port (the API's is `metrics_port`); -1 turns it off.
    indexer_metrics_port: int = Field(default=9464, ge=-1)


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
    search: SearchSettings = Field(default_factory=SearchSettings)

    #: Password guesses at one share link from one client address, and from anywhere.
    share_password_address_bucket: BucketSize = BucketSize(capacity=5, refill_per_s=1 / 60)
    share_password_link_bucket: BucketSize = BucketSize(capacity=100, refill_per_s=100 / 3600)
    #: Peers whose `x-parley-client-address` header is believed (the edge proxies).
    trusted_proxies: list[str] = Field(default_factory=list)

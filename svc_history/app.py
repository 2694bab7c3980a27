"""svc_history assembled: schema, adapters, domain, servicer, auth and the outbox relay.

`HistoryApp.start` is what `python -m svc_history` runs and what integration tests start
in-process against the local stack's real Cassandra, Redis and Pulsar (with svc_session's
key ring as the key source, where production fetches svc_session's JWKS).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from cassandra.cluster import Session as CqlSession
from redis.asyncio import Redis

from parley_core.auth import AuthInterceptor, HttpKeySource, JwtVerifier, KeySource, Revocations
from parley_core.data import DataConnections, open_data
from parley_core.outbox import Outbox, OutboxRelay, PulsarClient
from parley_core.server import RunningServer, start_server
from svc_history.conversations import Conversations
from svc_history.events import OutboxEvents
from svc_history.messages import Messages
from svc_history.paging import PageTokens
from svc_history.search.embedding import Embedder
from svc_history.search.index import MessageIndex
from svc_history.search.searching import Search
from svc_history.servicer import INTERNAL_METHODS, PUBLIC_METHODS, HistoryServiceServicer, register
from svc_history.settings import HistorySettings
from svc_history.sharing import ShareLinks
from svc_history.store import MIGRATIONS, Stores
from svc_history.throttle import GuessThrottle
from svc_history.user_data import UserData


def page_token_secret(settings: HistorySettings) -> bytes:
    """The configured key, decoded; ValueError when it is missing or short."""
    if settings.page_token_key is None:
        raise ValueError("PARLEY_HISTORY_PAGE_TOKEN_KEY is not set (32 random bytes, base64url)")
    text = settings.page_token_key.get_secret_value().strip()
    try:
        secret = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as error:
        raise ValueError("PARLEY_HISTORY_PAGE_TOKEN_KEY is not base64url") from error
    if len(secret) < 32:
        raise ValueError("PARLEY_HISTORY_PAGE_TOKEN_KEY must hold at least 32 bytes")
    return secret


@dataclass(frozen=True)
class Domain:
    """svc_history's domain objects, wired to their adapters."""

    conversations: Conversations
    messages: Messages
    share_links: ShareLinks
    user_data: UserData
    search: Search

    @classmethod
    def assemble(
        cls, settings: HistorySettings, stores: Stores, events: OutboxEvents, redis: Redis
    ) -> Domain:
        secret = page_token_secret(settings)
        tokens = PageTokens(secret)
        conversations = Conversations(settings, stores, tokens, events)
        messages = Messages(settings, stores, conversations, tokens, events)
        guesses = GuessThrottle(
            redis, settings.share_password_address_bucket, settings.share_password_link_bucket
        )
        share_links = ShareLinks(settings, stores, conversations, messages, tokens, secret, guesses)
        user_data = UserData(stores, conversations, messages, events)
        search = Search(
            settings.search, stores, MessageIndex(settings.search), Embedder(settings.search), tokens
        )
        return cls(conversations, messages, share_links, user_data, search)


@dataclass
class HistoryApp:
    settings: HistorySettings
    server: RunningServer
    stores: Stores
    domain: Domain
    revocations: Revocations
    data: DataConnections

    @property
    def port(self) -> int:
        return self.server.port

    @classmethod
    async def start(
        cls,
        settings: HistorySettings,
        *,
        key_source: KeySource | None = None,
        pulsar_service: str | Callable[[], PulsarClient] | None = None,
    ) -> HistoryApp:
        """Migrate the schema, then serve. key_source: where token keys come from (default:
        svc_session's JWKS at `jwks_url`); pulsar_service: the broker URL or a client
        factory (default: `pulsar_url`)."""
        page_token_secret(settings)  # refuse to start without it, before connecting anywhere
        data = await open_data(settings, MIGRATIONS, pulsar_service=pulsar_service)
        cql, redis, outbox, registry = data.cql, data.redis, data.outbox, data.registry
        stores = Stores.open(cql, settings.keyspace)
        domain = Domain.assemble(settings, stores, OutboxEvents(outbox), redis)
        servicer = HistoryServiceServicer(
            settings,
            domain.conversations,
            domain.messages,
            domain.share_links,
            domain.user_data,
            domain.search,
        )
        keys = key_source if key_source is not None else HttpKeySource(settings.jwks_url)
        revocations = Revocations(redis)
        await revocations.start()
        interceptor = AuthInterceptor(
            JwtVerifier(keys, settings.issuer, settings.audience, revocations),
            PUBLIC_METHODS,
            internal_methods=INTERNAL_METHODS,
            service_verifier=JwtVerifier(keys, settings.issuer, settings.internal_audience),
            on_behalf_verifier=JwtVerifier(
                keys, settings.issuer, settings.audience, revocations, leeway_s=settings.on_behalf_leeway_s
            ),
            registry=registry,
        )

        async def add(server: grpc.aio.Server) -> list[str]:
            return list(await register(server, servicer))

        running = await start_server(settings, add, interceptors=[interceptor], registry=registry)
        return cls(settings, running, stores, domain, revocations, data)

    @property
    def outbox(self) -> Outbox:
        return self.data.outbox

    @property
    def relay(self) -> OutboxRelay:
        return self.data.relay

    @property
    def cql(self) -> CqlSession:
        return self.data.cql

    @property
    def redis(self) -> Redis:
        return self.data.redis

    async def stop(self) -> None:
        await self.server.stop()
        await self.domain.search.close()
        await self.revocations.close()
        await self.data.close()

"""svc_session assembled: adapters, domain, servicers, interceptors, the JWKS endpoint, the
internal rate limit listener and the mail relay.

`SessionApp.start` is what `python -m svc_session` runs and what integration tests start
in-process against the local stack's real Cassandra and Redis.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from aiohttp import web
from cassandra.cluster import Cluster
from cassandra.cluster import Session as CqlSession
from prometheus_client import CollectorRegistry, Gauge
from redis.asyncio import Redis

from parley_core.auth import AuthInterceptor, JwtVerifier, Revocations
from parley_core.cassandra import connect_to, observe_requests
from parley_core.erasure import UserDeletedConsumer
from parley_core.server import RunningServer, start_server
from svc_session.accounts import Accounts
from svc_session.api_keys import ApiKeys
from svc_session.email_proofs import EmailProofs
from svc_session.erasure import AccountErasure
from svc_session.keys import KeyEncryptionKey, KeyRing
from svc_session.mailbox import DevMailbox, MailRelay
from svc_session.ratelimit import RateLimits, TokenBucketLimiter
from svc_session.rls import add_rate_limit_service
from svc_session.service_identity import ServiceTokens
from svc_session.servicer import PUBLIC_METHODS, SessionServiceServicer, add_service_identity
from svc_session.servicer import register as register_session
from svc_session.sessions import Sessions
from svc_session.settings import SessionSettings
from svc_session.store import Stores

_log = structlog.get_logger("svc_session")

JWKS_PATH = "/.well-known/jwks.json"


@dataclass(frozen=True)
class Domain:
    """svc_session's domain objects, wired to their adapters."""

    limits: RateLimits
    sessions: Sessions
    api_keys: ApiKeys
    proofs: EmailProofs
    accounts: Accounts

    @classmethod
    def assemble(
        cls, settings: SessionSettings, stores: Stores, keys: KeyRing, redis: Redis, revocations: Revocations
    ) -> Domain:
        limits = RateLimits(TokenBucketLimiter(redis), settings)
        sessions = Sessions(settings, stores.users, stores.sessions, keys, revocations)
        api_keys = ApiKeys(stores.users, stores.api_keys, sessions, limits)
        proofs = EmailProofs(settings, stores.users, stores.proofs, sessions, api_keys, limits)
        accounts = Accounts(settings, stores.users, sessions, proofs, limits)
        return cls(limits, sessions, api_keys, proofs, accounts)


@dataclass
class SessionApp:
    settings: SessionSettings
    server: RunningServer
    internal_server: RunningServer
    jwks_runner: web.AppRunner
    jwks_port: int
    keys: KeyRing
    stores: Stores
    domain: Domain
    revocations: Revocations
    relay: MailRelay | None
    erasure: UserDeletedConsumer | None
    cluster: Cluster
    cql: CqlSession
    redis: Redis

    @property
    def accounts(self) -> Accounts:
        return self.domain.accounts

    @property
    def limits(self) -> RateLimits:
        return self.domain.limits

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def internal_port(self) -> int:
        return self.internal_server.port

    async def issue_service_token(self, service: str) -> str:
        """A service token for service, minted in-process (tests, tools)."""
        token, _expires = await ServiceTokens(self.settings, self.keys).mint(service)
        return token

    @classmethod
    async def start(cls, settings: SessionSettings) -> SessionApp:
        if settings.key_encryption_key is None:
            raise ValueError("PARLEY_SESSION_KEY_ENCRYPTION_KEY is not set (32 bytes, base64url)")
        kek = KeyEncryptionKey(settings.key_encryption_key.get_secret_value())
        cluster, cql = await asyncio.to_thread(connect_to, settings)
        stores = await asyncio.to_thread(Stores.open, cql, settings.keyspace, settings.replication_factor)
        redis = Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
        )
        keys = KeyRing(
            stores.keys,
            kek,
            settings.key_rotation_s,
            settings.access_token_ttl_s,
            settings.key_publish_lead_s,
        )
        await keys.load()
        revocations = Revocations(redis)
        await revocations.start()
        domain = Domain.assemble(settings, stores, keys, redis, revocations)
        limits, proofs, accounts = domain.limits, domain.proofs, domain.accounts
        servicer = SessionServiceServicer(
            settings, accounts, domain.sessions, domain.api_keys, proofs, limits
        )
        verifier = JwtVerifier(keys, settings.issuer, settings.audience, revocations)
        registry = CollectorRegistry()
        observe_requests(cql, registry)
        _key_metrics(keys, settings, registry)
        interceptor = AuthInterceptor(verifier, PUBLIC_METHODS, registry=registry)

        async def register(server: grpc.aio.Server) -> list[str]:
            return list(await register_session(server, servicer))

        service_tokens = ServiceTokens(settings, keys)

        async def register_internal(server: grpc.aio.Server) -> list[str]:
            return [
                add_rate_limit_service(server, limits, verifier),
                add_service_identity(server, service_tokens),
            ]

        running = await start_server(settings, register, interceptors=[interceptor], registry=registry)
        # Envoy's rate limit service and service identity on a listener of their own, which
        # only the edge and Parley's services reach.
        internal = settings.model_copy(
            update={"host": settings.internal_host, "port": settings.internal_port, "metrics_port": -1}
        )
        rls = await start_server(internal, register_internal)
        runner, jwks_port = await _serve_jwks(keys, settings)
        _log.info("jwks served", port=jwks_port, path=JWKS_PATH, internal_port=rls.port)
        relay = None
        if settings.dev_mailbox_dir is not None:
            relay = MailRelay(
                proofs, stores.proofs, DevMailbox(settings.dev_mailbox_dir), poll_s=settings.mail_poll_s
            )
            relay.start()
        erasure = None
        if settings.pulsar_url:
            erasure = UserDeletedConsumer(
                settings.pulsar_url,
                AccountErasure(stores, domain.sessions).erase,
                subscription=f"svc_session-erasure-{settings.keyspace}",
            )
            erasure.start()
        return cls(
            settings, running, rls, runner, jwks_port, keys, stores, domain, revocations, relay, erasure,
            cluster, cql, redis,
        )  # fmt: skip

    async def stop(self) -> None:
        await self.server.stop()
        await self.internal_server.stop()
        if self.relay is not None:
            await self.relay.stop()
        if self.erasure is not None:
            await self.erasure.stop()
        await self.jwks_runner.cleanup()
        await self.revocations.close()
        await self.redis.aclose()
        await asyncio.to_thread(self.cluster.shutdown)


def _key_metrics(keys: KeyRing, settings: SessionSettings, registry: CollectorRegistry) -> None:
    """The signing key's age beside the rotation period, so an alert can tell a ring that
    stopped rotating (every replica's age past the period) from one that rotates."""
    Gauge(
        "parley_session_signing_key_age_seconds",
        "Age of the key that signs access tokens now (rotated every rotation_s).",
        registry=registry,
    ).set_function(keys.signing_key_age_s)
    Gauge(
        "parley_session_signing_key_rotation_seconds",
        "How often the signing key is rotated (PARLEY_SESSION_KEY_ROTATION_S).",
        registry=registry,
    ).set(settings.key_rotation_s)


async def _serve_jwks(keys: KeyRing, settings: SessionSettings) -> tuple[web.AppRunner, int]:
    cache_control = f"public, max-age={settings.jwks_max_age_s}"

    async def jwks(request: web.Request) -> web.Response:
        await keys.key_set(refresh=False)  # rotates when due
        return web.json_response(keys.jwks(), headers={"Cache-Control": cache_control})

    app = web.Application()
    app.router.add_get(JWKS_PATH, jwks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.jwks_port)
    await site.start()
    server: Any = site._server
    bound = int(server.sockets[0].getsockname()[1])
    return runner, bound

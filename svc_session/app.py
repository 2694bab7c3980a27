"""svc_session assembled: adapters, domain, servicers, interceptors and the JWKS endpoint.

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
from redis.asyncio import Redis

from parley_core.auth import AuthInterceptor, JwtVerifier
from parley_core.cassandra import connect
from parley_core.revocation import RedisRevocationList
from parley_core.server import RunningServer, start_server
from svc_session.accounts import Accounts
from svc_session.keys import KeyRing
from svc_session.mailbox import Mailer
from svc_session.ratelimit import RateLimits, TokenBucketLimiter
from svc_session.rls import add_rate_limit_service
from svc_session.servicer import PUBLIC_METHODS, SessionServiceServicer
from svc_session.settings import SessionSettings
from svc_session.store import SessionStore

_log = structlog.get_logger("svc_session")

JWKS_PATH = "/.well-known/jwks.json"


@dataclass
class SessionApp:
    settings: SessionSettings
    server: RunningServer
    jwks_runner: web.AppRunner
    jwks_port: int
    keys: KeyRing
    accounts: Accounts
    limits: RateLimits
    cluster: Cluster
    redis: Redis

    @property
    def port(self) -> int:
        return self.server.port

    @classmethod
    async def start(cls, settings: SessionSettings) -> SessionApp:
        cluster, cql = await asyncio.to_thread(connect, settings.cassandra_hosts, settings.cassandra_port)
        store = await asyncio.to_thread(
            SessionStore.open, cql, settings.keyspace, settings.replication_factor
        )
        redis = Redis.from_url(settings.redis_url)
        keys = KeyRing(store, settings.key_rotation_s, settings.access_token_ttl_s)
        await keys.load()
        revocations = RedisRevocationList(redis)
        limits = RateLimits(TokenBucketLimiter(redis), settings)
        mailer = Mailer(store, settings.dev_mailbox_dir)
        accounts = Accounts(settings, store, keys, revocations, limits, mailer)
        servicer = SessionServiceServicer(settings, accounts, limits)
        verifier = JwtVerifier(keys, settings.issuer, settings.audience, revocations)
        interceptor = AuthInterceptor(verifier, PUBLIC_METHODS | {_RLS_METHOD})

        async def register(server: grpc.aio.Server) -> list[str]:
            from svc_session.servicer import register as register_session

            names = list(await register_session(server, servicer))
            names.append(add_rate_limit_service(server, limits))
            return names

        running = await start_server(settings, register, interceptors=[interceptor])
        runner, jwks_port = await _serve_jwks(keys, settings.host, settings.jwks_port)
        _log.info("jwks served", port=jwks_port, path=JWKS_PATH)
        return cls(settings, running, runner, jwks_port, keys, accounts, limits, cluster, redis)

    async def stop(self) -> None:
        await self.server.stop()
        await self.jwks_runner.cleanup()
        await self.redis.aclose()
        await asyncio.to_thread(self.cluster.shutdown)


#: Envoy's rate limit calls come from the proxy, which carries no user token.
_RLS_METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"


async def _serve_jwks(keys: KeyRing, host: str, port: int) -> tuple[web.AppRunner, int]:
    async def jwks(request: web.Request) -> web.Response:
        await keys.key_set(refresh=False)  # rotates when due
        return web.json_response(keys.jwks(), headers={"Cache-Control": "public, max-age=300"})

    app = web.Application()
    app.router.add_get(JWKS_PATH, jwks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server: Any = site._server
    bound = int(server.sockets[0].getsockname()[1])
    return runner, bound

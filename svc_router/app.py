"""svc_router assembled: catalog, backends, turn log, admission, budgets, history client, outbox, server.

`RouterApp.start` is what `python -m svc_router` runs and what integration tests start
in-process against the local stack (with svc_session's key ring as the key source, where
production fetches svc_session's JWKS).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
from tritonclient.grpc.aio import InferenceServerClient

from parley_core.auth import (
    AuthInterceptor,
    HttpKeySource,
    JwtVerifier,
    KeySource,
    Revocations,
    ServiceTokenSource,
)
from parley_core.budgets import BudgetState
from parley_core.catalog import Catalog, CatalogModel, load_catalog
from parley_core.data import DataConnections, open_data
from parley_core.erasure import UserDeletedConsumer
from parley_core.outbox import PulsarClient
from parley_core.ratelimit import TokenBucketLimiter
from parley_core.server import RunningServer, start_server
from parley_core.tracing import client_interceptors
from svc_router.admission import Admission
from svc_router.backends import ModelRoutes
from svc_router.budget import TurnBudgets
from svc_router.engine import TurnEngine
from svc_router.events import MIGRATIONS, UsageEvents
from svc_router.history import HistoryClient
from svc_router.prompts import Prompts
from svc_router.servicer import ChatServiceServicer, Health, HealthSource, register
from svc_router.settings import RouterSettings
from svc_router.tokens import CatalogTokenCounter, TritonTokenCounter
from svc_router.turn_log import TurnLog

#: The service name in service tokens and in svc_history's list of appenders.
SERVICE_NAME = "svc_router"


class _RoutesHealth(HealthSource):
    def __init__(self, routes: ModelRoutes) -> None:
        self._routes = routes

    async def health(self, model: CatalogModel) -> Health:
        return await self._routes.health(model)


@dataclass
class RouterApp:
    settings: RouterSettings
    server: RunningServer
    engine: TurnEngine
    routes: ModelRoutes
    catalog: Catalog
    log: TurnLog
    revocations: Revocations
    identity: ServiceTokenSource
    data: DataConnections
    history_channel: grpc.aio.Channel
    triton: InferenceServerClient
    erasure: UserDeletedConsumer

    @property
    def port(self) -> int:
        return self.server.port

    @classmethod
    async def start(
        cls,
        settings: RouterSettings,
        *,
        key_source: KeySource | None = None,
        pulsar_service: str | Callable[[], PulsarClient] | None = None,
    ) -> RouterApp:
        """Connect, migrate the outbox table, then serve."""
        if settings.service_secret is None:
            raise ValueError("PARLEY_ROUTER_SERVICE_SECRET is not set (svc_router's service credential)")
        catalog = load_catalog(settings.catalog_path)
        data = await open_data(settings, MIGRATIONS, pulsar_service=pulsar_service)
        redis, registry = data.redis, data.registry
        triton = InferenceServerClient(settings.triton_target)
        routes = ModelRoutes(catalog, settings, registry=registry, triton=triton)
        await routes.start()
        identity = ServiceTokenSource(
            settings.identity_target, SERVICE_NAME, settings.service_secret.get_secret_value()
        )
        history_channel = grpc.aio.insecure_channel(
            settings.history_target, interceptors=client_interceptors()
        )
        log = TurnLog(redis, ttl_s=settings.turn_log_ttl_s, max_events=settings.turn_log_max_events)
        engine = TurnEngine(
            settings,
            catalog,
            routes,
            Prompts(CatalogTokenCounter(TritonTokenCounter(triton)), timeout_s=settings.count_timeout_s),
            HistoryClient(history_channel, identity, timeout_s=settings.history_timeout_s),
            log,
            Admission(TokenBucketLimiter(redis), settings),
            TurnBudgets(BudgetState(redis), catalog, hold_s=settings.budget_hold_s, registry=registry),
            UsageEvents(data.outbox),
            registry=registry,
        )
        await engine.start()
        erasure = UserDeletedConsumer(
            settings.pulsar_url, engine.erase_user, subscription=f"svc_router-erasure-{settings.keyspace}"
        )
        erasure.start()
        servicer = ChatServiceServicer(settings, engine, catalog, _RoutesHealth(routes))
        keys = key_source if key_source is not None else HttpKeySource(settings.jwks_url)
        revocations = Revocations(redis)
        await revocations.start()
        interceptor = AuthInterceptor(
            JwtVerifier(keys, settings.issuer, settings.audience, revocations), (), registry=registry
        )

        async def add(server: grpc.aio.Server) -> list[str]:
            return list(await register(server, servicer))

        running = await start_server(settings, add, interceptors=[interceptor], registry=registry)
        return cls(
            settings,
            running,
            engine,
            routes,
            catalog,
            log,
            revocations,
            identity,
            data,
            history_channel,
            triton,
            erasure,
        )

    async def stop(self) -> None:
        # NOT_SERVING first, so Envoy and the Kubernetes readiness probe send new turns to
        # other replicas; then running turns finish (or, after the grace, end as failed,
        # keeping their answers), so the streams that read them complete before the server stops.
        await self.server.drain()
        await self.engine.close(finish_s=self.settings.shutdown_grace_s)
        await self.server.stop()
        await self.erasure.stop()
        await self.routes.close()
        await self.revocations.close()
        await self.identity.close()
        await self.history_channel.close()
        await self.triton.close()
        await self.data.close()

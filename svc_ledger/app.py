"""svc_ledger assembled: schema, prices, the usage consumer, budgets, reports (and the
backfill of their hourly view), the system's health probes and the servicer.

`LedgerApp.start` is what `python -m svc_ledger` runs and what integration tests start
in-process against the local stack's real Cassandra, Redis and Pulsar (with svc_session's
key ring as the key source, where production fetches svc_session's JWKS).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pulsar.asyncio

from parley_core.auth import AuthInterceptor, HttpKeySource, JwtVerifier, KeySource, Revocations
from parley_core.budgets import BudgetState
from parley_core.catalog import Catalog, load_catalog
from parley_core.data import DataConnections, open_data
from parley_core.server import RunningServer, start_server
from svc_ledger import health_probes
from svc_ledger.accounts import Accounts
from svc_ledger.budgets import Budgets
from svc_ledger.consumer import UsageConsumer, UsageMetrics
from svc_ledger.health import HealthMetrics, SystemHealth
from svc_ledger.hours import HourlyBackfill
from svc_ledger.pricing import PriceBook
from svc_ledger.reports import Reports
from svc_ledger.servicer import LedgerServiceServicer, register
from svc_ledger.settings import LedgerSettings
from svc_ledger.store import MIGRATIONS, LedgerStore


@dataclass
class LedgerApp:
    settings: LedgerSettings
    server: RunningServer
    store: LedgerStore
    prices: PriceBook
    budgets: Budgets
    consumer: UsageConsumer
    revocations: Revocations
    health: SystemHealth
    data: DataConnections
    backfill: HourlyBackfill

    @property
    def port(self) -> int:
        return self.server.port

    @classmethod
    async def start(
        cls,
        settings: LedgerSettings,
        *,
        key_source: KeySource | None = None,
        pulsar_client: Callable[[str], pulsar.asyncio.Client] | None = None,
    ) -> LedgerApp:
        """Migrate, check the catalog's prices against the ones used, rebuild the budgets'
        Redis state if it is missing, then consume usage events and serve."""
        catalog = load_catalog(settings.catalog_path)
        data = await open_data(settings, MIGRATIONS)
        try:
            return await cls._assemble(settings, catalog, data, key_source, pulsar_client)
        except BaseException:
            await data.close()
            raise

    @classmethod
    async def _assemble(
        cls,
        settings: LedgerSettings,
        catalog: Catalog,
        data: DataConnections,
        key_source: KeySource | None,
        pulsar_client: Callable[[str], pulsar.asyncio.Client] | None,
    ) -> LedgerApp:
        store = LedgerStore(data.cql, settings.keyspace)
        prices = await PriceBook.recorded(
            catalog, store, datetime.now(UTC), timedelta(seconds=settings.price_grace_s)
        )
        state = BudgetState(data.redis)
        budgets = Budgets(settings, store, state)
        if not await state.is_ready():
            await budgets.rebuild()
        metrics = UsageMetrics(data.registry)
        accounts = Accounts(store, state, written=metrics.written)
        consumer = UsageConsumer(settings, prices, accounts, metrics, client_factory=pulsar_client)
        health = SystemHealth(settings.health, HealthMetrics(data.registry), health_probes.plan)
        servicer = LedgerServiceServicer(prices, Reports(store), budgets, health)
        keys = key_source if key_source is not None else HttpKeySource(settings.jwks_url)
        revocations = Revocations(data.redis)
        await revocations.start()
        interceptor = AuthInterceptor(
            JwtVerifier(keys, settings.issuer, settings.audience, revocations), (), registry=data.registry
        )

        async def add(server: grpc.aio.Server) -> list[str]:
            return list(await register(server, servicer))

        try:
            running = await start_server(settings, add, interceptors=[interceptor], registry=data.registry)
        except BaseException:
            await revocations.close()
            await health.close()
            raise
        budgets.start()
        consumer.start()
        backfill = HourlyBackfill(store)
        backfill.start()
        # Started means subscribed (events published from now on are billed), unless Pulsar
        # is away: then the API serves anyway and the consumer keeps trying.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(consumer.subscribed.wait(), settings.subscribe_wait_s)
        return cls(settings, running, store, prices, budgets, consumer, revocations, health, data, backfill)

    async def stop(self) -> None:
        await self.server.stop()
        await self.backfill.stop()
        await self.consumer.stop()
        await self.budgets.stop()
        await self.revocations.close()
        await self.health.close()
        await self.data.close()

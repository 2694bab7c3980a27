"""The indexer process (`python -m svc_history indexer`) and what the reindex command opens.

The indexer needs no gRPC server: Cassandra (read only: which conversations exist), Pulsar
(the events), Triton (embeddings) and Weaviate (the index); its metrics are served on
`search.indexer_metrics_port`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pulsar.asyncio
import structlog
from cassandra.cluster import Cluster
from prometheus_client import CollectorRegistry, start_http_server

from parley_core.cassandra import connect_to
from parley_core.migrations import migrate
from svc_history.search.embedding import Embedder
from svc_history.search.index import MessageIndex
from svc_history.search.indexer import IndexerMetrics, SearchIndexer
from svc_history.settings import HistorySettings
from svc_history.store import MIGRATIONS, Stores

__all__ = ["IndexerApp", "open_search"]

_log = structlog.get_logger("svc_history.indexer")


@contextlib.asynccontextmanager
async def open_search(
    settings: HistorySettings | None = None,
) -> AsyncIterator[tuple[Stores, MessageIndex, Embedder]]:
    """History's keyspace (migrated), the index and the embedding model, closed on exit."""
    settings = settings or HistorySettings()
    cluster, cql = await asyncio.to_thread(connect_to, settings)
    index, embedder = MessageIndex(settings.search), Embedder(settings.search)
    try:
        await migrate(cql, settings.keyspace, settings.replication_factor, MIGRATIONS)
        yield Stores.open(cql, settings.keyspace), index, embedder
    finally:
        await index.close()
        await embedder.close()
        await asyncio.to_thread(cluster.shutdown)


@dataclass
class IndexerApp:
    settings: HistorySettings
    indexer: SearchIndexer
    index: MessageIndex
    embedder: Embedder
    cluster: Cluster
    registry: CollectorRegistry
    metrics_port: int | None

    @classmethod
    async def start(
        cls,
        settings: HistorySettings,
        *,
        pulsar_client: Callable[[str], pulsar.asyncio.Client] | None = None,
        subscribe_wait_s: float = 10.0,
    ) -> IndexerApp:
        """Connect, then follow the events (started means subscribed, unless Pulsar is away:
        then it keeps trying)."""
        cluster, cql = await asyncio.to_thread(connect_to, settings)
        await migrate(cql, settings.keyspace, settings.replication_factor, MIGRATIONS)
        registry = CollectorRegistry()
        metrics_port = None
        if settings.search.indexer_metrics_port >= 0:
            server, _ = start_http_server(
                settings.search.indexer_metrics_port, addr=settings.host, registry=registry
            )
            metrics_port = int(server.server_port)
        index, embedder = MessageIndex(settings.search), Embedder(settings.search)
        indexer = SearchIndexer(
            settings, Stores.open(cql, settings.keyspace), index, embedder, IndexerMetrics(registry),
            client_factory=pulsar_client,
        )  # fmt: skip
        indexer.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(indexer.subscribed.wait(), subscribe_wait_s)
        _log.info("indexing", collection=settings.search.collection, metrics_port=metrics_port)
        return cls(settings, indexer, index, embedder, cluster, registry, metrics_port)

    async def stop(self) -> None:
        await self.indexer.stop()
        await self.index.close()
        await self.embedder.close()
        await asyncio.to_thread(self.cluster.shutdown)

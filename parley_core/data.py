"""What a data service opens at start-up: its keyspace (migrated), Redis, and the outbox
relay that publishes its events to Pulsar. svc_history and svc_router start the same way."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from cassandra.cluster import Cluster
from cassandra.cluster import Session as CqlSession
from prometheus_client import CollectorRegistry
from redis.asyncio import BlockingConnectionPool, Redis

from parley_core.cassandra import connect_to, observe_requests
from parley_core.logging import configure_logging
from parley_core.migrations import Migration, migrate, run_cli
from parley_core.outbox import Outbox, OutboxRelay, PulsarClient
from parley_core.server import Stoppable, run_until_signal
from parley_core.settings import DataServiceSettings

__all__ = ["DataConnections", "open_data", "run_data_service"]


@dataclass
class DataConnections:
    cluster: Cluster
    cql: CqlSession
    redis: Redis
    outbox: Outbox
    relay: OutboxRelay
    #: Where the service's metrics go, the relay's among them.
    registry: CollectorRegistry

    async def close(self) -> None:
        """After the server has stopped: the relay, Redis, then Cassandra."""
        await self.relay.stop()
        await self.redis.aclose()
        await asyncio.to_thread(self.cluster.shutdown)


async def open_data(
    settings: DataServiceSettings,
    migrations: Sequence[Migration],
    *,
    pulsar_service: str | Callable[[], PulsarClient] | None = None,
) -> DataConnections:
    """Connect to Cassandra and bring the keyspace up to migrations, connect to Redis, and
    start the outbox relay (to `pulsar_service`, the broker URL or a client factory;
    default `settings.pulsar_url`)."""
    cluster, cql = await asyncio.to_thread(connect_to, settings)
    await migrate(cql, settings.keyspace, settings.replication_factor, migrations)
    redis = Redis.from_pool(
        BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            timeout=settings.redis_timeout_s,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
        )
    )
    registry = CollectorRegistry()
    observe_requests(cql, registry)
    outbox = Outbox(cql, settings.keyspace)
    relay = OutboxRelay(
        outbox,
        pulsar_service or settings.pulsar_url,
        poll_s=settings.outbox_poll_s,
        max_backoff_s=settings.outbox_max_backoff_s,
        send_timeout_s=settings.outbox_send_timeout_s,
        registry=registry,
    )
    relay.start()
    return DataConnections(cluster, cql, redis, outbox, relay, registry)


def run_data_service(
    prog: str,
    description: str | None,
    settings: DataServiceSettings,
    migrations: Sequence[Migration],
    start: Callable[[], Awaitable[Stoppable]],
    argv: Sequence[str] | None = None,
) -> None:
    """The `main` of a data service: `migrate` brings the keyspace up to the code's schema
    and exits (a Kubernetes init container or a deploy step runs it; several at once are
    safe); no command migrates, then serves until SIGTERM."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("migrate", help="apply the schema migrations the keyspace lacks, then exit")
    args = parser.parse_args(argv)
    if args.command == "migrate":
        configure_logging(settings.log_format, settings.log_level)
        sys.exit(run_cli(settings, settings.keyspace, settings.replication_factor, migrations))
    run_until_signal(settings, start)

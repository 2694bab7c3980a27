"""The gRPC server every service runs: health, reflection, observability, graceful stop.

A service describes itself with a `ServiceSpec` (its settings and a function that adds its
servicers); `run_service` does the rest. Shutdown on SIGTERM/SIGINT flips every health
status to NOT_SERVING, waits `drain_delay_s` so load balancers stop sending, then lets
in-flight calls finish for up to `shutdown_grace_s` before cancelling what remains.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import structlog
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from parley_core.logging import configure_logging
from parley_core.observability import ObservabilityInterceptor, RpcMetrics
from parley_core.settings import ServiceSettings
from parley_core.tracing import configure_tracing

__all__ = [
    "Register",
    "RunningServer",
    "StartError",
    "Stoppable",
    "run_service",
    "run_until_signal",
    "serve_until_signal",
    "start_server",
]

_log = structlog.get_logger("parley.server")

#: Adds a service's servicers to the server; returns the full names of the services added.
Register = Callable[[grpc.aio.Server], Awaitable[Sequence[str]]]


@dataclass
class RunningServer:
    """A started server: where it listens and how to stop it."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    services: Sequence[str]
    port: int
    metrics_port: int | None
    registry: CollectorRegistry
    settings: ServiceSettings
    metrics_http: Any = None
    draining: bool = False

    async def drain(self) -> None:
        """Say NOT_SERVING and wait `drain_delay_s`, so load balancers send new calls elsewhere
        while the calls in flight go on; once only (`stop` does it unless done before)."""
        if self.draining:
            return
        self.draining = True
        for name in ("", *self.services):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.settings.drain_delay_s > 0:
            await asyncio.sleep(self.settings.drain_delay_s)

    async def stop(self) -> None:
        """Graceful stop: drain (NOT_SERVING, drain delay), then let in-flight calls finish."""
        await self.drain()
        _log.info("stopping", grace_s=self.settings.shutdown_grace_s)
        await self.server.stop(self.settings.shutdown_grace_s)
        if self.metrics_http is not None:
            self.metrics_http.shutdown()
            self.metrics_http.server_close()


async def start_server(
    settings: ServiceSettings,
    register: Register,
    *,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    registry: CollectorRegistry | None = None,
) -> RunningServer:
    """Build, bind and start a server; it is SERVING once this returns.

    registry: where the server's metrics go (and what its metrics endpoint serves); pass
    the one your interceptors registered their own metrics in. A new one when None.
    At most `settings.max_concurrent_rpcs` calls run at once; grpc answers the calls over
    that with RESOURCE_EXHAUSTED.
    """
    registry = registry if registry is not None else CollectorRegistry()
    metrics = RpcMetrics(registry)
    server = grpc.aio.server(
        interceptors=[ObservabilityInterceptor(metrics), *interceptors],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    services = list(await register(server))

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise OSError(f"cannot listen on {settings.host}:{settings.port}")
    metrics_port: int | None = None
    http_server = None
    if settings.metrics_port >= 0:
        http_server, _thread = start_http_server(settings.metrics_port, addr=settings.host, registry=registry)
        metrics_port = int(http_server.server_port)
    await server.start()
    for name in ("", *services):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    _log.info("serving", services=services, port=port, metrics_port=metrics_port)
    return RunningServer(
        server, health_servicer, services, port, metrics_port, registry, settings, http_server
    )


class Stoppable(Protocol):
    async def stop(self) -> None: ...


class StartError(Exception):
    """The service could not start (a dependency is unreachable, a port is taken)."""


async def serve_until_signal(start: Callable[[], Awaitable[Stoppable]]) -> None:
    """Start something that serves, wait for SIGTERM or SIGINT, then stop it gracefully."""
    try:
        running = await start()
    except Exception as error:
        # One clear line for the operator; the orchestrator restarts the process.
        _log.error("start failed", error=f"{type(error).__name__}: {error}")
        raise StartError(str(error)) from error
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop()
    _log.info("stopped")


def run_until_signal(
    settings: ServiceSettings, start: Callable[[], Awaitable[Stoppable]], *, role: str = ""
) -> None:
    """The `main` of a service process: logging, trace export, uvloop, serve until a signal.

    role: what the process is beside the service's API ("indexer"); its spans' service name
    is then `svc_history-indexer` rather than `svc_history`.
    """
    configure_logging(settings.log_format, settings.log_level)
    name = f"{settings.service_name}-{role}" if role else settings.service_name
    tracing = configure_tracing(name, settings.otlp_endpoint)
    try:
        uvloop.run(serve_until_signal(start))
    except StartError:
        raise SystemExit(1) from None
    finally:
        tracing.shutdown()


def run_service(settings: ServiceSettings, register: Register) -> None:
    """`run_until_signal` for a service that is just its servicers."""
    run_until_signal(settings, lambda: start_server(settings, register))

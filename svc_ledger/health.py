"""The platform's health for the admin pages: every probe at once, each bounded in time.

One slow or dead part must never hide the others: each probe runs concurrently with its own
short timeout (the settings' `probe_timeout_s`, less when the caller's deadline is nearer),
and a probe that fails, times out or raises becomes its component's UNHEALTHY or UNKNOWN
with a detail; the report itself always comes back. The probes themselves (gRPC health,
Envoy's internal listener, Triton, Pulsar's admin API) are svc_ledger.health_probes's
adapters, planned from the settings there.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

from svc_ledger.settings import HealthSettings

_log = structlog.get_logger("svc_ledger.health")

#: Time kept back from the caller's deadline for building the answer.
_MARGIN_S = 0.1
#: The shortest time a probe is given, however near the caller's deadline.
_FLOOR_S = 0.05


class State(enum.Enum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class Kind(enum.Enum):
    SERVICE = "service"
    EDGE_CLUSTER = "edge_cluster"
    MODEL = "model"
    SEARCH_INDEX = "search_index"


@dataclass(frozen=True)
class IndexLag:
    """Events the search indexer has not acknowledged, and how long the oldest has waited."""

    backlog_events: int
    oldest_event_age: timedelta | None = None


@dataclass(frozen=True)
class Component:
    name: str
    kind: Kind
    state: State
    detail: str = ""
    index_lag: IndexLag | None = None


@dataclass(frozen=True)
class Report:
    components: list[Component]
    check_time: datetime


#: A probe: given its time budget in seconds, the components it answers for.
Probe = Callable[[float], Awaitable[list[Component]]]

#: The components of the probes that are not one per address.
INDEXER = "svc_history-indexer"
TRITON = "triton"


@dataclass(frozen=True)
class Planned:
    """One probe, and its components' names and state for when it cannot answer."""

    kind: Kind
    names: list[str]
    probe: Probe
    #: The state of its components when the probe times out or raises.
    failed: State = State.UNHEALTHY


class HealthMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.seconds = Histogram(
            "parley_ledger_health_probe_seconds",
            "Time one GetSystemHealth probe took, by kind of component.",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.components = Counter(
            "parley_ledger_health_components_total",
            "Components reported by GetSystemHealth, by kind and state.",
            ["kind", "state"],
            registry=registry,
        )


class SystemHealth:
    """Probes what HealthSettings names; `check` is GetSystemHealth's domain call."""

    def __init__(
        self,
        settings: HealthSettings,
        metrics: HealthMetrics,
        plan: Callable[[HealthSettings, httpx.AsyncClient], list[Planned]],
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._http = httpx.AsyncClient()
        self._plan = plan(settings, self._http)

    async def close(self) -> None:
        await self._http.aclose()

    def _unconfigured(self) -> list[Component]:
        """The components whose probe has no address: UNKNOWN, so the page says so."""
        s = self._settings
        missing: list[Component] = []
        if not s.indexer_metrics_url:
            missing.append(Component(INDEXER, Kind.SERVICE, State.UNKNOWN, "not configured"))
        if not s.edge_url:
            missing += [
                Component(cluster, Kind.EDGE_CLUSTER, State.UNKNOWN, "not configured")
                for cluster in s.edge_clusters
            ]
        if not s.triton_url:
            missing.append(Component(TRITON, Kind.MODEL, State.UNKNOWN, "not configured"))
        if not s.pulsar_admin_url and not s.indexer_metrics_url:
            missing.append(
                Component(
                    s.index_subscription,
                    Kind.SEARCH_INDEX,
                    State.UNKNOWN,
                    "not configured: neither Pulsar's admin API nor the indexer's metrics",
                )
            )
        return missing

    async def check(self, time_left_s: float | None) -> Report:
        """Every component's health now; time_left_s is the caller's remaining deadline."""
        check_time = datetime.now(UTC)
        budget = self._settings.probe_timeout_s
        if time_left_s is not None:
            budget = max(_FLOOR_S, min(budget, time_left_s - _MARGIN_S))
        answers = await asyncio.gather(*(self._run(planned, budget) for planned in self._plan))
        components = [c for answer in answers for c in answer] + self._unconfigured()
        order = list(Kind)
        components.sort(key=lambda c: order.index(c.kind))  # stable: each group keeps its order
        for component in components:
            self._metrics.components.labels(component.kind.value, component.state.value).inc()
        return Report(components, check_time)

    async def _run(self, planned: Planned, budget: float) -> list[Component]:
        started = time.perf_counter()
        try:
            # The probes bound their own calls by budget; this bounds everything else.
            return await asyncio.wait_for(planned.probe(budget), budget + _MARGIN_S)
        except TimeoutError:
            detail = f"no answer within {budget:.2f} s"
        except Exception as error:  # a probe's bug must not fail the report
            _log.exception("a health probe failed", kind=planned.kind.value, names=planned.names)
            detail = f"the probe failed: {type(error).__name__}"
        finally:
            self._metrics.seconds.labels(planned.kind.value).observe(time.perf_counter() - started)
        _log.warning("health probe unanswered", kind=planned.kind.value, names=planned.names, why=detail)
        return [Component(name, planned.kind, planned.failed, detail) for name in planned.names]

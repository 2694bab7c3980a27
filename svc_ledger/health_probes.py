"""GetSystemHealth's adapters: what each part of the platform answers, as components.

Each probe bounds its own calls by the time it is given and turns what it hears (or an
error) into components; svc_ledger.health runs them together. Fresh connections per call:
a long-lived gRPC channel to a service that was down would answer from its reconnect
backoff, not from the service.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families

from parley_core.events import CONVERSATION_DELETED, MESSAGE_CREATED, USER_DELETED, topic_url
from parley_core.stubs import health_stub
from svc_ledger.health import INDEXER, TRITON, Component, IndexLag, Kind, Planned, State
from svc_ledger.settings import HealthSettings

#: The topics the search indexer follows (svc_history.search.indexer.TOPICS).
INDEX_TOPICS = (MESSAGE_CREATED, CONVERSATION_DELETED, USER_DELETED)

#: The indexer's gauge while it holds its subscription (its readiness, as the stack waits on).
_SUBSCRIBED = "parley_search_indexer_subscribed 1.0"


def plan(settings: HealthSettings, http: httpx.AsyncClient) -> list[Planned]:
    """The probes settings configure, in the report's order within each kind."""
    planned = [
        Planned(Kind.SERVICE, [name], functools.partial(service, name, target))
        for name, target in settings.services.items()
    ]
    if settings.indexer_metrics_url:
        planned.append(
            Planned(Kind.SERVICE, [INDEXER], functools.partial(indexer, http, settings.indexer_metrics_url))
        )
    if settings.edge_url:
        planned += [
            Planned(
                Kind.EDGE_CLUSTER,
                [cluster],
                functools.partial(edge_cluster, http, settings.edge_url, cluster),
                failed=State.UNKNOWN,
            )
            for cluster in settings.edge_clusters
        ]
    if settings.triton_url:
        planned.append(Planned(Kind.MODEL, [TRITON], functools.partial(models, http, settings.triton_url)))
    subscription = settings.index_subscription
    if settings.pulsar_admin_url:
        # The broker's count: every event published and not yet acknowledged.
        probe = functools.partial(
            index_lag, http, settings.pulsar_admin_url, subscription, settings.index_backlog_degraded
        )
        planned.append(Planned(Kind.SEARCH_INDEX, [subscription], probe, failed=State.UNKNOWN))
    elif settings.indexer_metrics_url:
        # Without Pulsar's admin API (pulsar-lite): what the indexer holds unindexed.
        probe = functools.partial(
            held_by_indexer, http, settings.indexer_metrics_url, subscription, settings.index_backlog_degraded
        )
        planned.append(Planned(Kind.SEARCH_INDEX, [subscription], probe, failed=State.UNKNOWN))
    return planned


async def service(name: str, target: str, budget_s: float) -> list[Component]:
    """grpc.health.v1 Check of the whole server (service "")."""
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            reply = await health_stub(channel).Check(health_pb2.HealthCheckRequest(), timeout=budget_s)
    except grpc.aio.AioRpcError as error:
        return [Component(name, Kind.SERVICE, State.UNHEALTHY, f"{error.code().name}: {error.details()}")]
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status == health_pb2.HealthCheckResponse.SERVING:
        return [Component(name, Kind.SERVICE, State.HEALTHY, status)]
    return [Component(name, Kind.SERVICE, State.UNHEALTHY, status)]


async def indexer(http: httpx.AsyncClient, url: str, budget_s: float) -> list[Component]:
    """The search indexer serves no gRPC: alive while its metrics say it is subscribed."""
    try:
        reply = await http.get(url, timeout=budget_s)
        reply.raise_for_status()
    except httpx.HTTPError as error:
        return [Component(INDEXER, Kind.SERVICE, State.UNHEALTHY, f"metrics did not answer: {_error(error)}")]
    if any(line.strip() == _SUBSCRIBED for line in reply.text.splitlines()):
        return [Component(INDEXER, Kind.SERVICE, State.HEALTHY, "subscribed")]
    return [Component(INDEXER, Kind.SERVICE, State.UNHEALTHY, "does not hold its subscription")]


async def edge_cluster(http: httpx.AsyncClient, base: str, cluster: str, budget_s: float) -> list[Component]:
    """Envoy's own view of one cluster, from its internal listener (edge_proxy.render): every
    host healthy is HEALTHY; some is DEGRADED (Envoy routes to those); none is UNHEALTHY."""
    # Not imported from edge_proxy: services never import the edge's code; the paths are the
    # contract between them (edge_proxy.render.cluster_health_path, cluster_any_healthy_path).
    path = f"{base.rstrip('/')}/clusters/{cluster}/health"
    deadline = time.monotonic() + budget_s
    try:
        every = await http.get(path, timeout=budget_s)
        some = None
        if every.status_code == 503 and not _draining(every):
            some = await http.get(f"{path}/any", timeout=max(deadline - time.monotonic(), 0.01))
    except httpx.HTTPError as error:
        detail = f"the edge's internal listener did not answer: {_error(error)}"
        return [Component(cluster, Kind.EDGE_CLUSTER, State.UNKNOWN, detail)]
    state, detail = _cluster_state(every, some)
    return [Component(cluster, Kind.EDGE_CLUSTER, state, detail)]


def _draining(reply: httpx.Response) -> bool:
    return bool(reply.headers.get("x-envoy-immediate-health-check-fail"))


def _cluster_state(every: httpx.Response, some: httpx.Response | None) -> tuple[State, str]:
    """A cluster's state from the answers of its every-host path and (after a 503 there) its
    any-host path."""
    if every.status_code == 200:
        return State.HEALTHY, "every host passes Envoy's health checks"
    if every.status_code == 503 and _draining(every):
        return State.UNHEALTHY, "Envoy is failing its own health checks (draining)"
    if some is not None and some.status_code == 200:
        return State.DEGRADED, "some hosts fail Envoy's health checks; it routes to the others"
    if some is not None and some.status_code == 503:
        return State.UNHEALTHY, "no host passes Envoy's health checks"
    if some is not None and some.status_code == 404:  # an edge from before the any-host path
        return State.UNHEALTHY, "hosts fail Envoy's health checks (this edge does not say how many)"
    status = (some or every).status_code
    return State.UNKNOWN, f"the edge does not report this cluster (HTTP {status})"


async def models(http: httpx.AsyncClient, base: str, budget_s: float) -> list[Component]:
    """Triton's repository index: every model with its state; READY is healthy."""
    try:
        reply = await http.post(f"{base.rstrip('/')}/v2/repository/index", json={}, timeout=budget_s)
        reply.raise_for_status()
        index: list[dict[str, Any]] = reply.json()
    except (httpx.HTTPError, ValueError) as error:
        return [Component(TRITON, Kind.MODEL, State.UNHEALTHY, f"Triton did not answer: {_error(error)}")]
    versions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in index:
        versions[str(entry.get("name", ""))].append(entry)
    components = []
    for name in sorted(versions):
        ready = [v for v in versions[name] if v.get("state") == "READY"]
        if ready:
            found = ", ".join(f"version {v['version']}" for v in ready if v.get("version"))
            detail = f"READY {found}".strip()
            components.append(Component(f"models/{name}", Kind.MODEL, State.HEALTHY, detail))
            continue
        why = "; ".join(
            f"{v.get('state') or 'not loaded'}" + (f": {v['reason']}" if v.get("reason") else "")
            for v in versions[name]
        )
        components.append(Component(f"models/{name}", Kind.MODEL, State.UNHEALTHY, why))
    if not components:
        return [Component(TRITON, Kind.MODEL, State.UNHEALTHY, "the model repository is empty")]
    return components


async def index_lag(
    http: httpx.AsyncClient, base: str, subscription: str, degraded_above: int, budget_s: float
) -> list[Component]:
    """The indexer subscription's backlog over its topics, from Pulsar's admin REST API."""
    try:
        stats = await asyncio.gather(*(_topic_stats(http, base, topic, budget_s) for topic in INDEX_TOPICS))
    except (httpx.HTTPError, ValueError) as error:
        detail = f"Pulsar's admin API did not answer: {_error(error)}"
        return [Component(subscription, Kind.SEARCH_INDEX, State.UNKNOWN, detail)]
    backlog, earliest_ms, missing = 0, 0, []
    for topic, topic_stats in zip(INDEX_TOPICS, stats, strict=True):
        if topic_stats is None:
            continue  # no such topic yet: nothing was ever published to it
        found = topic_stats.get("subscriptions", {}).get(subscription)
        if found is None:
            missing.append(topic)
            continue
        backlog += int(found.get("msgBacklog", 0))
        oldest = int(found.get("earliestMsgPublishTimeInBacklog") or 0)
        if oldest > 0:
            earliest_ms = oldest if not earliest_ms else min(earliest_ms, oldest)
    if missing:
        detail = f"the indexer is not subscribed to {', '.join(missing)}"
        return [Component(subscription, Kind.SEARCH_INDEX, State.UNHEALTHY, detail)]
    age = None
    if backlog and earliest_ms:
        age = max(timedelta(0), datetime.now(UTC) - datetime.fromtimestamp(earliest_ms / 1000, UTC))
    state = State.DEGRADED if backlog > degraded_above else State.HEALTHY
    detail = f"{backlog} events behind" + (f", the oldest {age.total_seconds():.0f} s old" if age else "")
    return [Component(subscription, Kind.SEARCH_INDEX, state, detail, IndexLag(backlog, age))]


async def held_by_indexer(
    http: httpx.AsyncClient, url: str, subscription: str, degraded_above: int, budget_s: float
) -> list[Component]:
    """The lag the indexer reports itself: events received and not yet indexed, and the age
    of the oldest (its gauges parley_search_index_lag_events and _seconds). It cannot count
    what the broker has not delivered yet; Pulsar's admin API can (index_lag)."""
    try:
        reply = await http.get(url, timeout=budget_s)
        reply.raise_for_status()
        gauges = {
            sample.name: sample.value
            for family in text_string_to_metric_families(reply.text)
            for sample in family.samples
        }
    except (httpx.HTTPError, ValueError) as error:
        detail = f"the indexer's metrics did not answer: {_error(error)}"
        return [Component(subscription, Kind.SEARCH_INDEX, State.UNKNOWN, detail)]
    held = gauges.get("parley_search_index_lag_events")
    if held is None:
        detail = "the indexer does not report its lag"
        return [Component(subscription, Kind.SEARCH_INDEX, State.UNKNOWN, detail)]
    backlog = int(held)
    oldest_s = gauges.get("parley_search_index_lag_seconds") or 0.0
    age = timedelta(seconds=oldest_s) if backlog and oldest_s > 0 else None
    state = State.DEGRADED if backlog > degraded_above else State.HEALTHY
    detail = f"{backlog} events held by the indexer, not yet indexed" + (
        f", the oldest {oldest_s:.0f} s old" if age else ""
    )
    return [Component(subscription, Kind.SEARCH_INDEX, state, detail, IndexLag(backlog, age))]


async def _topic_stats(
    http: httpx.AsyncClient, base: str, topic: str, budget_s: float
) -> dict[str, Any] | None:
    path = topic_url(topic).removeprefix("persistent://")
    reply = await http.get(
        f"{base.rstrip('/')}/admin/v2/persistent/{path}/stats",
        params={"getEarliestTimeInBacklog": "true"},
        timeout=budget_s,
    )
    if reply.status_code == 404:
        return None
    reply.raise_for_status()
    stats: dict[str, Any] = reply.json()
    return stats


def _error(error: Exception) -> str:
    """An error in a few words: its type, and its message where it has one."""
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}"[:200] if text else type(error).__name__

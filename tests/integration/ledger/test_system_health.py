"""GetSystemHealth: the admin's view of every service, the edge's clusters, the models and the
search index, probed at each call against the real servers; admins only; a dead part is
reported, never a failed call."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import socket
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pulsar
import pytest

from edge_proxy.render import Address
from parley.ledger.v1 import ledger_pb2 as pb
from parley.session.v1 import session_pb2
from parley_core.events import MESSAGE_CREATED, topic_url
from parley_core.stubs import ledger_stub, session_stub
from parley_stack.config import REPO_ROOT
from parley_stack.servers.services import SessionService
from parley_stack.testing import LocalStack
from svc_ledger.health_probes import INDEX_TOPICS
from svc_ledger.settings import HealthSettings
from tests.integration.edge.own_edge import closed_port, own_edge
from tests.integration.history.helpers import Person
from tests.integration.ledger.conftest import admin_md
from tests.integration.session.helpers import PASSWORD, bearer, claims_of, forged_token, register_verified

if TYPE_CHECKING:
    from parley.ledger.v1.ledger_pb2_grpc import LedgerServiceAsyncStub
    from svc_ledger.app import LedgerApp
    from svc_session.app import SessionApp

pytestmark = pytest.mark.integration

Metadata = tuple[tuple[str, str], ...]
SERVICES = ("svc_session", "svc_history", "svc_router", "svc_ledger")


def _by_kind(reply: pb.GetSystemHealthResponse, kind: int) -> dict[str, pb.ComponentHealth]:
    return {c.name: c for c in reply.components if c.kind == kind}


async def _refused(call: object, code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    assert raised.value.code() == code, raised.value.details()


# -- the stack's own svc_ledger, directly and through the edge -------------------------------


async def _stack_person(stack: LocalStack, edge: str, *, admin: bool) -> Metadata:
    """A verified account of the stack's svc_session (made through the edge), made an admin
    out of band (`python -m svc_session admin grant`) when asked; its call metadata."""
    email = f"health-{secrets.token_hex(5)}@parley.test"
    async with grpc.aio.insecure_channel(edge) as channel:
        session = session_stub(channel)
        await register_verified(session, stack.config.data_dir("mailbox"), email)
        if admin:
            env = {**os.environ, **SessionService(stack.config).environment()}
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "svc_session", "admin", "grant", email,
                cwd=REPO_ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await process.communicate()
            assert process.returncode == 0, out.decode()
        login = await session.Login(
            session_pb2.LoginRequest(password=session_pb2.PasswordCredential(email=email, password=PASSWORD))
        )
    return admin_md(login.credentials.access_token)


@pytest.fixture(scope="module")
async def stack_admin(edge: str, local_stack: LocalStack) -> Metadata:
    return await _stack_person(local_stack, edge, admin=True)


def _assert_all_healthy(reply: pb.GetSystemHealthResponse, stack: LocalStack) -> None:
    services = _by_kind(reply, pb.COMPONENT_KIND_SERVICE)
    assert set(services) == {*SERVICES, "svc_history-indexer"}
    assert {name: c.state for name, c in services.items()} == dict.fromkeys(services, pb.HEALTH_STATE_HEALTHY)
    clusters = _by_kind(reply, pb.COMPONENT_KIND_EDGE_CLUSTER)
    assert {name: c.state for name, c in clusters.items()} == dict.fromkeys(SERVICES, pb.HEALTH_STATE_HEALTHY)
    models = _by_kind(reply, pb.COMPONENT_KIND_MODEL)
    for model in ("models/parley-scripted", "models/minilm-l6", "models/smollm2"):
        assert models[model].state == pb.HEALTH_STATE_HEALTHY, models[model]
        assert models[model].detail.startswith("READY")
    [index] = _by_kind(reply, pb.COMPONENT_KIND_SEARCH_INDEX).values()
    assert index.name == "search-indexer"
    if stack.config.pulsar == "apache":
        assert index.HasField("index_lag")
        assert index.index_lag.backlog_events >= 0
    else:
        # pulsar-lite has no admin REST API: the lag is what the indexer reports holding.
        assert index.state in (pb.HEALTH_STATE_HEALTHY, pb.HEALTH_STATE_DEGRADED)
        assert index.HasField("index_lag")
        assert index.index_lag.backlog_events >= 0
        assert "held by the indexer" in index.detail
    # Grouped: services, then clusters, then models, then the index.
    kinds = [c.kind for c in reply.components]
    assert kinds == sorted(kinds)
    assert reply.HasField("check_time")


async def test_an_admin_sees_every_part_of_the_stack_healthy(
    local_stack: LocalStack, stack_admin: Metadata
) -> None:
    host, port = local_stack.endpoint("svc_ledger", "grpc")
    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        reply = await ledger_stub(channel).GetSystemHealth(
            pb.GetSystemHealthRequest(), metadata=stack_admin, timeout=10
        )
    _assert_all_healthy(reply, local_stack)


async def test_an_admin_reads_the_systems_health_through_the_edge(
    edge: str, local_stack: LocalStack, stack_admin: Metadata
) -> None:
    async with grpc.aio.insecure_channel(edge) as channel:
        reply = await ledger_stub(channel).GetSystemHealth(
            pb.GetSystemHealthRequest(), metadata=stack_admin, timeout=10
        )
    _assert_all_healthy(reply, local_stack)


async def test_through_the_edge_a_user_is_refused_and_no_token_is_unauthenticated(
    edge: str, local_stack: LocalStack
) -> None:
    user = await _stack_person(local_stack, edge, admin=False)
    async with grpc.aio.insecure_channel(edge) as channel:
        stub = ledger_stub(channel)
        await _refused(
            stub.GetSystemHealth(pb.GetSystemHealthRequest(), metadata=user, timeout=10),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        await _refused(
            stub.GetSystemHealth(pb.GetSystemHealthRequest(), timeout=10), grpc.StatusCode.UNAUTHENTICATED
        )


# -- a ledger of the test's own, probing what it is told to ----------------------------------


def _probes(stack: LocalStack, **overrides: Any) -> HealthSettings:
    """The stack's real servers, as the local stack configures svc_ledger's probes."""
    config = stack.config
    values: dict[str, Any] = {
        "services": {
            name: f"{config.host}:{config.port(name.removeprefix('svc_') + '_grpc')}" for name in SERVICES
        },
        "indexer_metrics_url": f"http://{config.host}:{config.port('indexer_metrics')}/metrics",
        "edge_url": f"http://{config.host}:{config.port('envoy_internal')}",
        "triton_url": f"http://{config.host}:{config.port('triton_http')}",
    }
    values.update(overrides)
    return HealthSettings(**values)


async def _health(app: LedgerApp, md: Metadata) -> pb.GetSystemHealthResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        return await ledger_stub(channel).GetSystemHealth(
            pb.GetSystemHealthRequest(), metadata=md, timeout=10
        )


async def test_a_user_is_refused_and_a_call_without_a_token_is_unauthenticated(
    ledger: LedgerServiceAsyncStub, alice: Person
) -> None:
    await _refused(
        ledger.GetSystemHealth(pb.GetSystemHealthRequest(), metadata=alice.md),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await _refused(ledger.GetSystemHealth(pb.GetSystemHealthRequest()), grpc.StatusCode.UNAUTHENTICATED)


async def test_a_forged_tampered_or_expired_admin_token_is_unauthenticated(
    ledger: LedgerServiceAsyncStub, session_app: SessionApp, admin_token: str, alice: Person
) -> None:
    admin = claims_of(admin_token)
    now = int(time.time())
    # The admin's own claims, signed by a key that is not the ring's.
    forged = forged_token(admin)
    # Signed by the real ring, an hour past its expiry.
    expired = await session_app.keys.sign({**admin, "iat": now - 7200, "exp": now - 3600})
    # Alice's token with its role raised to admin: her signature no longer matches.
    header, _, signature = alice.token.split(".")
    raised = json.dumps({**claims_of(alice.token), "role": "admin"}).encode()
    tampered = f"{header}.{base64.urlsafe_b64encode(raised).rstrip(b'=').decode()}.{signature}"
    # Unsigned: the header says no algorithm.
    unsigned_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    unsigned = f"{unsigned_header}.{admin_token.split('.')[1]}."
    for token in (forged, expired, tampered, unsigned):
        await _refused(
            ledger.GetSystemHealth(pb.GetSystemHealthRequest(), metadata=bearer(token)),
            grpc.StatusCode.UNAUTHENTICATED,
        )
    # The real admin token still works: the refusals were about the tokens, not the caller.
    await ledger.GetSystemHealth(pb.GetSystemHealthRequest(), metadata=admin_md(admin_token), timeout=30)


async def test_a_stopped_part_is_unhealthy_and_the_call_still_succeeds(
    edge: str, local_stack: LocalStack, start_ledger: Callable[..., Any], admin_token: str
) -> None:
    closed = closed_port()
    probes = _probes(
        local_stack,
        services={"svc_session": f"{local_stack.config.host}:{local_stack.config.port('session_grpc')}",
                  "svc_gone": f"127.0.0.1:{closed}"},
        indexer_metrics_url=f"http://127.0.0.1:{closed}/metrics",
        edge_url=f"http://127.0.0.1:{closed}",
        triton_url=f"http://127.0.0.1:{closed}",
        pulsar_admin_url=f"http://127.0.0.1:{closed}",
        probe_timeout_s=1.0,
    )  # fmt: skip
    app = await start_ledger(health=probes)

    reply = await _health(app, admin_md(admin_token))

    services = _by_kind(reply, pb.COMPONENT_KIND_SERVICE)
    assert services["svc_session"].state == pb.HEALTH_STATE_HEALTHY
    assert services["svc_gone"].state == pb.HEALTH_STATE_UNHEALTHY
    assert services["svc_gone"].detail.startswith("UNAVAILABLE")
    assert services["svc_history-indexer"].state == pb.HEALTH_STATE_UNHEALTHY
    # Without the edge's answer a cluster's health is not known (the edge is down, not it).
    clusters = _by_kind(reply, pb.COMPONENT_KIND_EDGE_CLUSTER)
    assert {c.state for c in clusters.values()} == {pb.HEALTH_STATE_UNKNOWN}
    assert set(clusters) == set(SERVICES)
    assert _by_kind(reply, pb.COMPONENT_KIND_MODEL)["triton"].state == pb.HEALTH_STATE_UNHEALTHY
    [index] = _by_kind(reply, pb.COMPONENT_KIND_SEARCH_INDEX).values()
    assert index.state == pb.HEALTH_STATE_UNKNOWN
    assert "admin API did not answer" in index.detail


async def test_a_probe_that_hangs_is_cut_off_at_its_timeout(
    local_stack: LocalStack, start_ledger: Callable[..., Any], admin_token: str
) -> None:
    # A listener that accepts and never answers: the probe's own timeout must end it.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        app = await start_ledger(
            health=_probes(local_stack, triton_url=f"http://127.0.0.1:{port}", probe_timeout_s=0.5)
        )
        started = asyncio.get_running_loop().time()
        reply = await _health(app, admin_md(admin_token))
        took = asyncio.get_running_loop().time() - started

    assert took < 3.0
    triton = _by_kind(reply, pb.COMPONENT_KIND_MODEL)["triton"]
    assert triton.state == pb.HEALTH_STATE_UNHEALTHY
    # The services the ledger was pointed at still answered in the same call.
    services = _by_kind(reply, pb.COMPONENT_KIND_SERVICE)
    assert services["svc_session"].state == pb.HEALTH_STATE_HEALTHY


async def test_without_pulsars_admin_api_the_lag_comes_from_the_indexer_and_unknown_when_it_is_gone(
    local_stack: LocalStack, start_ledger: Callable[..., Any], admin_token: str
) -> None:
    closed = closed_port()
    app = await start_ledger(
        health=HealthSettings(indexer_metrics_url=f"http://127.0.0.1:{closed}/metrics", probe_timeout_s=1.0)
    )

    reply = await _health(app, admin_md(admin_token))

    [index] = _by_kind(reply, pb.COMPONENT_KIND_SEARCH_INDEX).values()
    assert index.state == pb.HEALTH_STATE_UNKNOWN
    assert index.detail.startswith("the indexer's metrics did not answer")
    assert not index.HasField("index_lag")


async def test_a_probe_without_an_address_is_unknown_not_configured(
    start_ledger: Callable[..., Any], admin_token: str
) -> None:
    app = await start_ledger(health=HealthSettings())

    reply = await _health(app, admin_md(admin_token))

    assert {(c.kind, c.name): (c.state, c.detail.split(":")[0]) for c in reply.components} == {
        (pb.COMPONENT_KIND_SERVICE, "svc_history-indexer"): (pb.HEALTH_STATE_UNKNOWN, "not configured"),
        **{
            (pb.COMPONENT_KIND_EDGE_CLUSTER, name): (pb.HEALTH_STATE_UNKNOWN, "not configured")
            for name in SERVICES
        },
        (pb.COMPONENT_KIND_MODEL, "triton"): (pb.HEALTH_STATE_UNKNOWN, "not configured"),
        (pb.COMPONENT_KIND_SEARCH_INDEX, "search-indexer"): (pb.HEALTH_STATE_UNKNOWN, "not configured"),
    }


# -- the search index's backlog, from Apache Pulsar's admin API --------------------------------


@pytest.mark.timeout(300)
async def test_the_index_backlog_is_the_indexer_subscriptions_unacknowledged_events(
    apache_pulsar: LocalStack, start_ledger: Callable[..., Any], admin_token: str
) -> None:
    running = apache_pulsar.stack.table.running("pulsar")
    assert running is not None
    subscription = f"search-indexer-{uuid.uuid4().hex[:8]}"
    client = pulsar.Client(running.endpoints["pulsar"])
    try:
        # The indexer's subscription exists on its three topics (as the indexer subscribes),
        # and three events arrive that it has not taken.
        consumer = client.subscribe(
            [topic_url(topic) for topic in INDEX_TOPICS],
            subscription,
            consumer_type=pulsar.ConsumerType.Shared,
        )
        consumer.close()
        producer = client.create_producer(topic_url(MESSAGE_CREATED))
        for _ in range(3):
            producer.send(b"not read by anyone")
        producer.close()
    finally:
        client.close()
    probes = HealthSettings(
        pulsar_admin_url=running.endpoints["http"], index_subscription=subscription, index_backlog_degraded=2
    )
    app = await start_ledger(health=probes)

    reply = await _health(app, admin_md(admin_token))

    [index] = _by_kind(reply, pb.COMPONENT_KIND_SEARCH_INDEX).values()
    assert index.name == subscription
    assert index.index_lag.backlog_events == 3
    assert index.index_lag.HasField("oldest_event_age")
    assert 0 <= index.index_lag.oldest_event_age.ToTimedelta().total_seconds() < 300
    # Above the threshold (2 events): degraded, not down.
    assert index.state == pb.HEALTH_STATE_DEGRADED
    assert index.detail.startswith("3 events behind")


# -- a cluster with some hosts down, through an Envoy of the test's own -----------------------


async def test_a_cluster_with_some_hosts_down_is_degraded_and_with_all_down_unhealthy(
    edge: str, local_stack: LocalStack, start_ledger: Callable[..., Any], admin_token: str, tmp_path: Path
) -> None:
    config = local_stack.config
    router = Address(config.host, config.port("router_grpc"))
    down = Address("127.0.0.1", closed_port())
    async with own_edge(
        local_stack, tmp_path / "envoy.log", svc_router=(router, down), svc_ledger=down
    ) as own:
        app = await start_ledger(health=_probes(local_stack, edge_url=own.internal))
        # Envoy marks the host that is down after its first active health check.
        deadline = time.monotonic() + 30
        while True:
            reply = await _health(app, admin_md(admin_token))
            clusters = _by_kind(reply, pb.COMPONENT_KIND_EDGE_CLUSTER)
            states = {name: c.state for name, c in clusters.items()}
            if states["svc_router"] != pb.HEALTH_STATE_HEALTHY:
                break
            assert time.monotonic() < deadline, states
            await asyncio.sleep(0.5)

    assert states == {
        "svc_session": pb.HEALTH_STATE_HEALTHY,
        "svc_history": pb.HEALTH_STATE_HEALTHY,
        "svc_router": pb.HEALTH_STATE_DEGRADED,
        "svc_ledger": pb.HEALTH_STATE_UNHEALTHY,
    }
    assert "routes to the others" in clusters["svc_router"].detail
    assert clusters["svc_ledger"].detail == "no host passes Envoy's health checks"

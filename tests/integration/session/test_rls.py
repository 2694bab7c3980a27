"""Envoy's rate limit service over the real Redis: served by a real grpc.aio server, called
by a Python client and by a real Envoy, and sharing its buckets with RateLimits."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import grpc
import httpx
import pytest
import redis.asyncio
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health_pb2
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from parley_core.auth import JwtVerifier, StaticKeySource
from parley_core.errors import RpcError
from parley_core.server import RunningServer, start_server
from parley_core.settings import ServiceSettings
from parley_core.stubs import health_stub
from parley_stack.progress import Progress
from parley_stack.servers import load
from parley_stack.testing import LocalStack
from svc_session.ratelimit import RateLimits, TokenBucketLimiter
from svc_session.rls import add_rate_limit_service
from svc_session.settings import BucketSize, SessionSettings

if TYPE_CHECKING:
    from envoy.service.ratelimit.v3.rls_pb2_grpc import RateLimitServiceAsyncStub

pytestmark = pytest.mark.integration

OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT
Unit = rls_pb2.RateLimitResponse.RateLimit.Unit
SERVICE = "envoy.service.ratelimit.v3.RateLimitService"

#: Two requests per user (one more per minute), five per address.
SETTINGS = SessionSettings(
    tiers={
        "free": BucketSize(capacity=2, refill_per_s=1 / 60),
        "pro": BucketSize(capacity=4, refill_per_s=1),
    },
    default_tier="free",
    auth_address_bucket=BucketSize(capacity=5, refill_per_s=1 / 60),
    anonymous_address_bucket=BucketSize(capacity=7, refill_per_s=1 / 60),
)


@pytest.fixture(scope="module")
async def limits(local_stack: LocalStack) -> AsyncIterator[RateLimits]:
    local_stack.ensure("redis")
    host, port = local_stack.endpoint("redis", "redis")
    client = redis.asyncio.Redis(host=host, port=port)
    try:
        yield RateLimits(TokenBucketLimiter(client, f"test:{secrets.token_hex(6)}:"), SETTINGS)
    finally:
        await client.aclose()


#: The issuer's signing key for this module's tokens; the RLS verifies them like any service.
SIGNING_KEY = ECKey.generate_key("P-256", parameters={"kid": "rls-test", "alg": "ES256"})
VERIFIER = JwtVerifier(
    StaticKeySource(KeySet([ECKey.import_key(SIGNING_KEY.as_dict(private=False))])),
    SETTINGS.issuer,
    SETTINGS.audience,
)


def _token(user_id: str, tier: str = "free", api_key_id: str = "") -> str:
    """A signed access token, as svc_session issues them."""
    moment = int(time.time())
    claims: dict[str, object] = {
        "iss": SETTINGS.issuer, "aud": SETTINGS.audience, "sub": user_id, "iat": moment,
        "exp": moment + 600, "role": "user", "tier": tier, "scope": "chat",
    }  # fmt: skip
    if api_key_id:
        claims["akid"] = api_key_id
    return jwt.encode({"alg": "ES256", "kid": "rls-test"}, claims, SIGNING_KEY, algorithms=["ES256"])


def _caller(tier: str = "free") -> list[tuple[str, str]]:
    """The descriptor Envoy builds from the authorization header of a fresh user's call."""
    return [("access_token", f"Bearer {_token(_user(), tier)}")]


@pytest.fixture(scope="module")
async def rls(limits: RateLimits) -> AsyncIterator[RunningServer]:
    async def register(server: grpc.aio.Server) -> list[str]:
        return [add_rate_limit_service(server, limits, VERIFIER)]

    running = await start_server(ServiceSettings(metrics_port=-1, shutdown_grace_s=1), register)
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def stub(rls: RunningServer) -> AsyncIterator[RateLimitServiceAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{rls.port}") as channel:
        yield cast("RateLimitServiceAsyncStub", rls_pb2_grpc.RateLimitServiceStub(channel))


def _user() -> str:
    """A user id no other test (or earlier run) has spent tokens of."""
    return f"u-{secrets.token_hex(4)}"


def _request(*descriptors: Sequence[tuple[str, str]], hits: int = 0) -> rls_pb2.RateLimitRequest:
    return rls_pb2.RateLimitRequest(
        domain="parley",
        descriptors=[
            ratelimit_pb2.RateLimitDescriptor(
                entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
            )
            for entries in descriptors
        ],
        hits_addend=hits,
    )


async def test_the_service_is_served_with_health_and_its_name(rls: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{rls.port}") as channel:
        reply = await health_stub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE))

    assert list(rls.services) == [SERVICE]
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_descriptor_is_ok_until_its_bucket_is_empty(stub: RateLimitServiceAsyncStub) -> None:
    user = _caller("free")
    replies = [await stub.ShouldRateLimit(_request(user)) for _ in range(3)]

    assert [r.overall_code for r in replies] == [OK, OK, OVER_LIMIT]
    assert [r.statuses[0].code for r in replies] == [OK, OK, OVER_LIMIT]
    assert [r.statuses[0].limit_remaining for r in replies] == [1, 0, 0]
    limit = replies[2].statuses[0].current_limit
    assert (limit.name, limit.requests_per_unit, limit.unit) == ("user:free", 1, Unit.MINUTE)
    # Over the limit: the time until one token is back (a minute, less a few ms).
    assert 59 < replies[2].statuses[0].duration_until_reset.ToMilliseconds() / 1000 <= 60
    assert [(h.key, h.value) for h in replies[2].response_headers_to_add] == [("retry-after", "60")]
    # Under it: the time until the bucket is full again (one token short: a minute).
    assert 59 < replies[0].statuses[0].duration_until_reset.ToMilliseconds() / 1000 <= 60
    assert not replies[0].response_headers_to_add


async def test_descriptors_are_independent_and_taken_all_or_nothing(stub: RateLimitServiceAsyncStub) -> None:
    spent, fresh = _caller(), _caller()
    await stub.ShouldRateLimit(_request(spent, hits=2))
    both = await stub.ShouldRateLimit(_request(spent, fresh))
    alone = await stub.ShouldRateLimit(_request(fresh))

    assert both.overall_code == OVER_LIMIT
    assert [(s.code, s.limit_remaining) for s in both.statuses] == [(OVER_LIMIT, 0), (OK, 2)]
    # The refused request took nothing from the fresh user's bucket.
    assert (alone.overall_code, alone.statuses[0].limit_remaining) == (OK, 1)


async def test_hits_addend_is_the_cost_and_the_tier_sizes_the_bucket(stub: RateLimitServiceAsyncStub) -> None:
    pro = _caller("pro")
    first = await stub.ShouldRateLimit(_request(pro, hits=3))
    second = await stub.ShouldRateLimit(_request(pro, hits=2))

    assert (first.overall_code, first.statuses[0].limit_remaining) == (OK, 1)
    assert second.overall_code == OVER_LIMIT
    assert second.statuses[0].current_limit.requests_per_unit == 1
    assert second.statuses[0].current_limit.unit == Unit.SECOND


async def test_unknown_descriptor_keys_are_ok_without_a_limit(stub: RateLimitServiceAsyncStub) -> None:
    reply = await stub.ShouldRateLimit(_request([("generic_key", "anything")], [("path", "/x")]))

    assert reply.overall_code == OK
    assert [s.code for s in reply.statuses] == [OK, OK]
    assert not reply.statuses[0].HasField("current_limit")


async def test_rls_and_check_user_share_one_bucket(
    stub: RateLimitServiceAsyncStub, limits: RateLimits
) -> None:
    by_check, by_rls = _user(), _user()
    await limits.check_user(by_check, "free")
    await limits.check_user(by_check, "free")
    seen_by_rls = await stub.ShouldRateLimit(_request([("access_token", _token(by_check))]))
    await stub.ShouldRateLimit(_request([("access_token", _token(by_rls))], hits=2))
    with pytest.raises(RpcError) as seen_by_check:
        await limits.check_user(by_rls, "free")

    assert seen_by_rls.overall_code == OVER_LIMIT
    assert seen_by_check.value.metadata == {"bucket": "user"}


async def test_identity_comes_from_the_verified_token_never_from_a_descriptor(
    stub: RateLimitServiceAsyncStub,
) -> None:
    victim = _user()
    # Stated identities and tiers are ignored: they neither spend a bucket nor size one.
    stated = await stub.ShouldRateLimit(_request([("user_id", victim), ("tier", "enterprise")], hits=5))
    claimed = await stub.ShouldRateLimit(
        _request([("access_token", _token(victim, "free")), ("tier", "pro")])
    )
    forged = await stub.ShouldRateLimit(_request([("access_token", "Bearer not.a.token")]))

    assert (stated.overall_code, stated.statuses[0].HasField("current_limit")) == (OK, False)
    # The victim's bucket is whole (two tokens, one taken now) and sized by the token's tier.
    assert claimed.statuses[0].limit_remaining == 1
    assert claimed.statuses[0].current_limit.name == "user:free"
    assert (forged.overall_code, forged.statuses[0].HasField("current_limit")) == (OK, False)


async def test_a_token_from_an_api_key_spends_the_keys_bucket(
    stub: RateLimitServiceAsyncStub, limits: RateLimits
) -> None:
    key_id = f"k-{secrets.token_hex(4)}"
    reply = await stub.ShouldRateLimit(_request([("access_token", _token(_user(), api_key_id=key_id))]))

    assert reply.statuses[0].current_limit.name == "apikey"
    assert reply.statuses[0].limit_remaining == SETTINGS.api_key_bucket.capacity - 1
    await limits.check_api_key(key_id)  # the same bucket
    again = await stub.ShouldRateLimit(_request([("access_token", _token(_user(), api_key_id=key_id))]))
    assert again.statuses[0].limit_remaining == SETTINGS.api_key_bucket.capacity - 3


async def test_remote_address_is_the_sign_in_address_bucket(
    stub: RateLimitServiceAsyncStub, limits: RateLimits
) -> None:
    address = f"2001:db8:{secrets.randbelow(65536):x}::1"
    await limits.check_auth_attempt(address, "")
    # Another address of the same IPv6 /64 is the same bucket.
    reply = await stub.ShouldRateLimit(_request([("remote_address", address.replace("::1", "::2"))]))

    assert (reply.overall_code, reply.statuses[0].limit_remaining) == (OK, 3)
    assert reply.statuses[0].current_limit.name == "addr"


async def test_an_anonymous_descriptor_is_the_addresss_own_larger_bucket_not_the_sign_in_one(
    stub: RateLimitServiceAsyncStub, limits: RateLimits
) -> None:
    address = f"2001:db8:{secrets.randbelow(65536):x}::1"
    anonymous = [("bucket", "anonymous"), ("remote_address", address)]

    for spent in range(1, SETTINGS.anonymous_address_bucket.capacity + 1):
        reply = await stub.ShouldRateLimit(_request(anonymous))
        assert (reply.overall_code, reply.statuses[0].limit_remaining) == (
            OK,
            SETTINGS.anonymous_address_bucket.capacity - spent,
        )
        assert reply.statuses[0].current_limit.name == "anon"
    refused = await stub.ShouldRateLimit(_request(anonymous))
    assert refused.overall_code == OVER_LIMIT
    assert [h.key for h in refused.response_headers_to_add] == ["retry-after"]
    # The sign-in bucket of the same address is untouched, and vice versa.
    sign_in = await stub.ShouldRateLimit(_request([("remote_address", address)]))
    assert (sign_in.overall_code, sign_in.statuses[0].limit_remaining) == (
        OK,
        SETTINGS.auth_address_bucket.capacity - 1,
    )
    # An unknown bucket name is not a way around the limit: it is the sign-in bucket.
    other = await stub.ShouldRateLimit(_request([("bucket", "roomier"), ("remote_address", address)]))
    assert other.statuses[0].current_limit.name == "addr"


# A real Envoy in front of the service: its rate limit filter is the client, so the protos
# in third_party/envoy_rls are checked against Envoy's own on the wire.

ENVOY_CONFIG = """
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
  - name: edge
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/HCM
          stat_prefix: edge
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route:
                  cluster: service
                  rate_limits:
                  - actions:
                    - request_headers: {header_name: authorization, descriptor_key: access_token}
          http_filters:
          - name: envoy.filters.http.ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
              domain: parley
              timeout: 5s
              failure_mode_deny: true
              rate_limited_as_resource_exhausted: true
              enable_x_ratelimit_headers: DRAFT_VERSION_03
              rate_limit_service:
                transport_api_version: V3
                grpc_service: {envoy_grpc: {cluster_name: service}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: service
    type: STATIC
    connect_timeout: 2s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: service
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: PORT}}}
"""


@pytest.fixture(scope="module")
def envoy_binary(local_stack: LocalStack) -> Path:
    server = load("envoy", local_stack.config)
    if not server.is_installed():
        with Progress() as progress:
            server.install(progress)
    return cast(Path, server.binary)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def envoy(
    envoy_binary: Path, rls: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """Envoy routing everything to the test server, rate limited by its RLS; (address, log)."""
    folder = tmp_path_factory.mktemp("envoy")
    config, admin_file, log = folder / "envoy.yaml", folder / "admin", folder / "envoy.log"
    hcm = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    config.write_text(ENVOY_CONFIG.replace("PORT", str(rls.port)).replace("HCM", hcm))
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(envoy_binary), "--config-path", str(config), "--admin-address-path", str(admin_file),
             "--disable-hot-restart", "--log-level", "warning"],
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield _listener(process, admin_file, log), log
    finally:
        process.terminate()
        process.wait(timeout=10)


def _listener(process: subprocess.Popen[bytes], admin_file: Path, log: Path) -> str:
    """Wait until Envoy's admin says LIVE; the address its listener bound."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"envoy exited: {log.read_text()[-2000:]}")
        admin = admin_file.read_text().strip() if admin_file.exists() else ""
        try:
            if admin and httpx.get(f"http://{admin}/ready", timeout=1).text.strip() == "LIVE":
                listeners = httpx.get(f"http://{admin}/listeners?format=json", timeout=1).json()
                bound = listeners["listener_statuses"][0]["local_address"]["socket_address"]
                return f"{bound['address']}:{bound['port_value']}"
        except (httpx.HTTPError, json.JSONDecodeError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"envoy not LIVE after 60 s: {log.read_text()[-2000:]}")


async def test_envoy_enforces_the_buckets_through_this_protocol(envoy: tuple[str, Path]) -> None:
    address, log = envoy
    metadata = (("authorization", f"Bearer {_token(_user(), 'free')}"),)
    outcomes: list[tuple[grpc.StatusCode, dict[str, str]]] = []
    async with grpc.aio.insecure_channel(address) as channel:
        for _ in range(3):
            call = health_stub(channel).Check(health_pb2.HealthCheckRequest(), metadata=metadata, timeout=10)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await call
            headers = [*(await call.initial_metadata() or ()), *(await call.trailing_metadata() or ())]
            outcomes.append((await call.code(), {k: str(v) for k, v in headers}))

    codes = [code for code, _headers in outcomes]
    assert codes == [grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED], (
        log.read_text()
    )
    # Envoy read the statuses: remaining tokens and the limit (one per 60 s, named).
    assert [h["x-ratelimit-remaining"] for _c, h in outcomes] == ["1", "0", "0"]
    assert outcomes[0][1]["x-ratelimit-limit"] == '1, 1;w=60;name="user:free"'
    # duration_until_reset: until full when allowed (1, then 2 tokens short), until the
    # next token when refused; Envoy rounds down to whole seconds.
    resets = [int(h["x-ratelimit-reset"]) for _c, h in outcomes]
    assert resets == pytest.approx([60, 120, 60], abs=1)
    # ... and the headers this service asked it to add to its refusal.
    assert outcomes[2][1]["retry-after"] == "60"
    assert outcomes[2][1]["x-envoy-ratelimited"] == "true"

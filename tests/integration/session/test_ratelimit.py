"""Token buckets in the local stack's real Redis: capacity, refill, expiry, atomicity, policy."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable

import grpc
import pytest
import redis.asyncio

from parley_core.errors import RpcError
from parley_stack.testing import LocalStack
from svc_session.ratelimit import RateLimits, TokenBucketLimiter
from svc_session.settings import BucketSize, SessionSettings

pytestmark = pytest.mark.integration

#: Refills so slow that no token comes back while a test runs.
FROZEN = 0.001


@pytest.fixture(scope="module")
def redis_endpoint(local_stack: LocalStack) -> tuple[str, int]:
    local_stack.ensure("redis")
    return local_stack.endpoint("redis", "redis")


@pytest.fixture
async def client(redis_endpoint: tuple[str, int]) -> AsyncIterator[redis.asyncio.Redis]:
    host, port = redis_endpoint
    connection = redis.asyncio.Redis(host=host, port=port)
    try:
        yield connection
    finally:
        await connection.aclose()


@pytest.fixture
def prefix() -> str:
    """Keys of this test alone, so reruns and a reused stack never share a bucket."""
    return f"test:{secrets.token_hex(6)}:"


@pytest.fixture
def limiter(client: redis.asyncio.Redis, prefix: str) -> TokenBucketLimiter:
    return TokenBucketLimiter(client, prefix)


async def test_a_bucket_allows_its_capacity_then_refuses_for_about_one_refill(
    limiter: TokenBucketLimiter,
) -> None:
    size = BucketSize(capacity=3, refill_per_s=10)
    taken = [await limiter.take("b", size) for _ in range(3)]
    refused = await limiter.take("b", size)

    assert [(d.allowed, d.remaining) for d in taken] == [(True, 2), (True, 1), (True, 0)]
    assert (refused.allowed, refused.remaining) == (False, 0)
    # One token every 0.1 s, less the few milliseconds the takes themselves lasted.
    assert 0.03 < refused.retry_after_s <= 0.1
    assert 0.23 < refused.reset_after_s <= 0.3


async def test_tokens_come_back_at_the_refill_rate(limiter: TokenBucketLimiter) -> None:
    size = BucketSize(capacity=2, refill_per_s=10)
    await limiter.take("b", size)
    await limiter.take("b", size)
    refused = await limiter.take("b", size)
    await asyncio.sleep(refused.retry_after_s + 0.01)
    again = await limiter.take("b", size)
    then = await limiter.take("b", size)

    assert not refused.allowed
    assert again.allowed
    assert not then.allowed  # one token came back, not two


async def test_a_refused_take_consumes_nothing(
    limiter: TokenBucketLimiter, client: redis.asyncio.Redis, prefix: str
) -> None:
    size = BucketSize(capacity=3, refill_per_s=FROZEN)
    await limiter.take("b", size, cost=2)
    stored = await client.hgetall(f"{prefix}b")
    refused = await limiter.take("b", size, cost=2)
    allowed = await limiter.take("b", size, cost=1)

    assert (refused.allowed, refused.remaining) == (False, 1)
    assert (allowed.allowed, allowed.remaining) == (True, 0)
    # The hash holds the tokens and the Redis clock (TIME, in ms) of the last take.
    seconds, micros = await client.time()
    assert float(stored[b"tokens"]) == pytest.approx(1, abs=0.01)
    assert abs(int(stored[b"ms"]) - (seconds * 1000 + micros // 1000)) < 5_000


async def test_a_cost_larger_than_the_bucket_is_never_allowed(limiter: TokenBucketLimiter) -> None:
    decision = await limiter.take("b", BucketSize(capacity=2, refill_per_s=1), cost=3)

    assert not decision.allowed
    assert decision.retry_after_s == float("inf")
    assert decision.remaining == 2


async def test_an_idle_bucket_expires_once_full_again(
    limiter: TokenBucketLimiter, client: redis.asyncio.Redis, prefix: str
) -> None:
    await limiter.take("b", BucketSize(capacity=5, refill_per_s=20))
    ttl_ms = await client.pttl(f"{prefix}b")
    await asyncio.sleep(0.1)

    assert 0 < ttl_ms <= 50
    assert await client.exists(f"{prefix}b") == 0


async def test_concurrent_takes_never_overspend(limiter: TokenBucketLimiter) -> None:
    size = BucketSize(capacity=10, refill_per_s=FROZEN)
    decisions = await asyncio.gather(*(limiter.take("b", size) for _ in range(50)))

    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))


async def test_several_buckets_are_taken_all_or_nothing(limiter: TokenBucketLimiter) -> None:
    roomy, tight = BucketSize(capacity=5, refill_per_s=FROZEN), BucketSize(capacity=1, refill_per_s=FROZEN)
    first = await limiter.take_all([("roomy", roomy), ("tight", tight)])
    second = await limiter.take_all([("roomy", roomy), ("tight", tight)])
    roomy_now = await limiter.take("roomy", roomy)

    assert [(d.allowed, d.remaining) for d in first] == [(True, 4), (True, 0)]
    assert [(d.allowed, d.remaining) for d in second] == [(True, 4), (False, 0)]
    assert roomy_now.remaining == 3  # the refused pair took nothing from "roomy"


def _limits(limiter: TokenBucketLimiter, **overrides: object) -> RateLimits:
    values: dict[str, object] = {
        "tiers": {"free": BucketSize(capacity=2, refill_per_s=FROZEN)},
        "default_tier": "free",
        "api_key_bucket": BucketSize(capacity=1, refill_per_s=FROZEN),
        "auth_address_bucket": BucketSize(capacity=3, refill_per_s=FROZEN),
        "auth_email_bucket": BucketSize(capacity=2, refill_per_s=FROZEN),
    }
    values.update(overrides)
    return RateLimits(limiter, SessionSettings(**values))  # type: ignore[arg-type]


async def _refusal(check: Awaitable[None]) -> RpcError:
    with pytest.raises(RpcError) as caught:
        await check
    return caught.value


async def test_a_user_over_the_limit_gets_resource_exhausted_with_a_retry_delay(
    limiter: TokenBucketLimiter,
) -> None:
    limits = _limits(limiter, tiers={"free": BucketSize(capacity=2, refill_per_s=0.5)})
    await limits.check_user("u1", "free")
    await limits.check_user("u1", "gold")  # an unknown tier counts against the default's size
    error = await _refusal(limits.check_user("u1", "free"))

    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (error.reason, dict(error.metadata)) == ("RATE_LIMITED", {"bucket": "user"})
    assert error.retry_after_s is not None
    assert 1.5 < error.retry_after_s <= 2.0


async def test_api_keys_have_buckets_of_their_own(limiter: TokenBucketLimiter) -> None:
    limits = _limits(limiter)
    await limits.check_api_key("k1")
    await limits.check_api_key("k2")
    await limits.check_user("k1", "free")  # a user id equal to a key id is another bucket
    error = await _refusal(limits.check_api_key("k1"))

    assert error.metadata == {"bucket": "apikey"}


async def test_email_and_address_buckets_are_independent_and_a_refusal_burns_neither(
    limiter: TokenBucketLimiter,
) -> None:
    limits = _limits(limiter)  # 3 attempts per address, 2 per email
    await limits.check_auth_attempt("203.0.113.1", "ada@example.com")
    await limits.check_auth_attempt("203.0.113.1", " ADA@example.com")
    by_email = await _refusal(limits.check_auth_attempt("203.0.113.1", "ada@example.com"))
    # The refused attempt took nothing from the address: one attempt is left there.
    await limits.check_auth_attempt("203.0.113.1", "bob@example.com")
    by_address = await _refusal(limits.check_auth_attempt("203.0.113.1", "cy@example.com"))
    # ... nor from cy's email bucket, which is full from another address.
    await limits.check_auth_attempt("198.51.100.2", "cy@example.com")
    await limits.check_auth_attempt("198.51.100.2", "cy@example.com")
    # An API key sign-in (no email) counts against the address alone.
    await limits.check_auth_attempt("198.51.100.2", "")

    assert by_email.metadata == {"bucket": "email"}
    assert by_address.metadata == {"bucket": "addr"}


async def test_an_unreachable_redis_is_unavailable_not_allowed(prefix: str) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = redis.asyncio.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    try:
        error = await _refusal(_limits(TokenBucketLimiter(down, prefix)).check_user("u1", "free"))
    finally:
        await down.aclose()

    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "RATE_LIMITER_UNAVAILABLE")

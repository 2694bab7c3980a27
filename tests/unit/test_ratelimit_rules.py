"""Which bucket a request counts against, how it is named and how a refusal reads (no Redis)."""

from __future__ import annotations

import hashlib
from typing import ClassVar

import grpc
import pytest
import redis.asyncio
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from parley_core.auth import Principal, unauthenticated
from svc_session.ratelimit import (
    RateLimits,
    TokenBucketLimiter,
    address_ident,
    email_ident,
    rate_limited,
)
from svc_session.rls import bucket_of, rate_limit_of
from svc_session.settings import BucketSize, SessionSettings

Unit = rls_pb2.RateLimitResponse.RateLimit.Unit


FREE = BucketSize(capacity=30, refill_per_s=0.5)
PRO = BucketSize(capacity=120, refill_per_s=2.0)
SETTINGS = SessionSettings(tiers={"free": FREE, "pro": PRO}, default_tier="free")


@pytest.fixture
def limits() -> RateLimits:
    # The client is never used: building buckets talks to no server.
    return RateLimits(TokenBucketLimiter(redis.asyncio.Redis()), SETTINGS)


def test_email_key_is_the_hash_of_the_normalised_email(limits: RateLimits) -> None:
    bucket = limits.email_bucket("  Ada@Example.COM ")
    digest = hashlib.sha256(b"ada@example.com").hexdigest()
    assert bucket.key == f"rl:email:{digest}"
    assert email_ident("ada@example.com") == digest
    assert "ada" not in bucket.key


@pytest.mark.parametrize(
    ("address", "ident"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7 ", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("[2001:db8:1:2:ffff::9]", "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.4", "198.51.100.4"),
        ("Unix:/run/envoy.sock", "unix:/run/envoy.sock"),
    ],
)
def test_addresses_are_counted_per_ipv4_address_and_per_ipv6_64(address: str, ident: str) -> None:
    assert address_ident(address) == ident


def test_user_bucket_is_sized_by_tier_and_unknown_tiers_get_the_default(limits: RateLimits) -> None:
    pro = limits.user_bucket("u1", "pro")
    unknown = limits.user_bucket("u1", "platinum")
    assert (pro.key, pro.size, pro.name) == ("rl:user:u1", PRO, "user:pro")
    assert (unknown.key, unknown.size, unknown.name) == ("rl:user:u1", FREE, "user:free")


def test_empty_ids_are_refused_rather_than_shared(limits: RateLimits) -> None:
    with pytest.raises(ValueError, match="user_id"):
        limits.user_bucket(" ", "free")
    with pytest.raises(ValueError, match="key_id"):
        limits.api_key_bucket("")


def test_a_default_tier_without_a_size_is_a_configuration_error() -> None:
    settings = SessionSettings(tiers={"free": FREE}, default_tier="basic")
    with pytest.raises(ValueError, match="basic"):
        RateLimits(TokenBucketLimiter(redis.asyncio.Redis()), settings)


class KnownTokens:
    """A verifier that knows three tokens (the unit-test stand-in for JwtVerifier)."""

    PRINCIPALS: ClassVar[dict[str, Principal]] = {
        "user-token": Principal("u1", "user", "pro", frozenset({"chat"})),
        "key-token": Principal("u1", "user", "pro", frozenset({"chat"}), api_key_id="k1"),
        "stranger-tier": Principal("u2", "user", "platinum", frozenset({"chat"})),
    }

    async def verify(self, token: str) -> Principal:
        if token not in self.PRINCIPALS:
            raise unauthenticated("unknown token", "INVALID_TOKEN")
        return self.PRINCIPALS[token]


@pytest.mark.parametrize(
    ("entries", "key"),
    [
        ([("remote_address", "10.0.0.1"), ("access_token", "Bearer key-token")], "rl:apikey:k1"),
        ([("remote_address", "10.0.0.1"), ("access_token", "Bearer user-token")], "rl:user:u1"),
        ([("access_token", "user-token")], "rl:user:u1"),
        ([("remote_address", "10.0.0.1"), ("email", "a@b.co")], f"rl:email:{email_ident('a@b.co')}"),
        ([("generic_key", "login"), ("remote_address", "10.0.0.1")], "rl:addr:10.0.0.1"),
        ([("access_token", ""), ("remote_address", "10.0.0.1")], "rl:addr:10.0.0.1"),
        # Stated identities are not believed: only the verified token names a user.
        ([("user_id", "u9"), ("api_key", "k9"), ("remote_address", "10.0.0.1")], "rl:addr:10.0.0.1"),
    ],
)
async def test_a_descriptor_counts_against_its_most_specific_key(
    limits: RateLimits, entries: list[tuple[str, str]], key: str
) -> None:
    bucket = await bucket_of(limits, KnownTokens(), entries)
    assert bucket is not None
    assert bucket.key == key


async def test_a_descriptor_without_known_keys_has_no_bucket(limits: RateLimits) -> None:
    assert await bucket_of(limits, KnownTokens(), [("generic_key", "x"), ("path", "/a")]) is None
    assert await bucket_of(limits, KnownTokens(), [("user_id", "u1"), ("tier", "pro")]) is None


async def test_a_token_that_does_not_verify_limits_nothing(limits: RateLimits) -> None:
    assert await bucket_of(limits, KnownTokens(), [("access_token", "Bearer forged")]) is None


async def test_the_verified_tier_sizes_the_user_bucket_whatever_the_descriptor_says(
    limits: RateLimits,
) -> None:
    bucket = await bucket_of(limits, KnownTokens(), [("access_token", "Bearer user-token"), ("tier", "free")])
    assert bucket == limits.user_bucket("u1", "pro")
    assert bucket.size == PRO
    unknown = await bucket_of(limits, KnownTokens(), [("access_token", "stranger-tier")])
    assert unknown == limits.user_bucket("u2", "free")  # an unknown tier gets the default's size


@pytest.mark.parametrize(
    ("refill_per_s", "count", "unit"),
    [
        (2.0, 2, Unit.SECOND),
        (0.5, 30, Unit.MINUTE),
        (0.2, 12, Unit.MINUTE),
        (1 / 60, 1, Unit.MINUTE),
        (1.5, 90, Unit.MINUTE),
        (1 / 7, 12343, Unit.DAY),
    ],
)
def test_refill_is_reported_in_the_smallest_whole_unit(
    limits: RateLimits, refill_per_s: float, count: int, unit: int
) -> None:
    bucket = limits.api_key_bucket("k1")
    sized = type(bucket)(bucket.kind, bucket.key, BucketSize(capacity=5, refill_per_s=refill_per_s), "apikey")
    limit = rate_limit_of(sized)
    assert (limit.name, limit.requests_per_unit, limit.unit) == ("apikey", count, unit)


def _details(status: grpc.Status) -> tuple[grpc.StatusCode, list[object]]:
    [(key, value)] = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    decoded = status_pb2.Status.FromString(value)
    found: list[object] = []
    for detail in decoded.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found.append(message)
    return status.code, found


def test_a_refusal_is_resource_exhausted_with_the_bucket_and_retry_info() -> None:
    code, details = _details(rate_limited("email", 12.5).to_status())
    info = error_details_pb2.ErrorInfo(
        reason="RATE_LIMITED", domain="session.parley.dev", metadata={"bucket": "email"}
    )
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=12, nanos=500_000_000))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details == [info, retry]


def test_a_refusal_that_no_wait_can_cure_carries_no_retry_info() -> None:
    _code, details = _details(rate_limited("user", float("inf")).to_status())
    assert [type(d) for d in details] == [error_details_pb2.ErrorInfo]


async def test_a_cost_below_one_is_refused_before_redis() -> None:
    limiter = TokenBucketLimiter(redis.asyncio.Redis())
    with pytest.raises(ValueError, match="cost"):
        await limiter.take("k", BucketSize(capacity=1, refill_per_s=1), cost=0)

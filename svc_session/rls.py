"""Envoy's rate limit service (`envoy.service.ratelimit.v3.RateLimitService`) over the same
Redis buckets as svc_session's own checks, so a limit holds whichever way a request comes in.

It is internal: served on a listener of its own that only the edge reaches, never on the
public port. Even so, it believes no identity a descriptor states: a caller's user, API key
and tier come from its verified access token, whose role and tier are the current ones
(parley_core.auth), so nobody can spend another user's bucket or pick a bigger tier.

Each descriptor counts against one bucket, chosen by the entry keys Envoy's rate limit
actions produce:

- `access_token` (the `authorization` header, `Bearer <jwt>`, or the bare token): the
  API key's bucket for a token issued from an API key, otherwise the user's bucket sized
  by the user's tier, the same ones svc_session's own checks take from. A token that does
  not verify limits nothing here: the service it is sent to refuses it anyway;
- `email`: the per-email sign-in bucket (the email is hashed, as in svc_session);
- `remote_address`: the per-address sign-in bucket or, with `bucket: anonymous` beside it
  in the same descriptor, the address's larger bucket for routine calls without a token.

When one descriptor carries several of these keys, the most specific one wins, in the
order above. Other keys (`user_id`, `tier`, `generic_key`, `path`, ...) are ignored, with a
warning the first time each is seen; a descriptor with none of the known keys is OK with
no limit. `hits_addend` is the cost (0 means 1), and, as in
`RateLimits`, the descriptors of one request are taken all or nothing.

Each status carries the tokens left and, as `duration_until_reset`, the time until this
request could pass when it is over the limit, or until the bucket is full when it is not.
An OVER_LIMIT answer also asks Envoy to add a `retry-after` header to its 429. When Redis
cannot answer, the call fails with UNAVAILABLE and Envoy's `failure_mode_deny` decides.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Protocol

import grpc
import structlog
from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2

from parley_core.auth import Principal
from parley_core.errors import RpcError
from parley_core.servicer import add_servicer
from svc_session.ratelimit import Bucket, RateLimits
from svc_session.settings import BucketSize

SERVICE = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"]

#: Descriptor keys naming a bucket, most specific first.
BUCKET_KEYS = ("access_token", "email", "remote_address")
#: Keys that qualify a bucket key: `bucket` picks which of an address's buckets.
QUALIFIER_KEYS = ("bucket",)

_Code = rls_pb2.RateLimitResponse.Code
_Unit = rls_pb2.RateLimitResponse.RateLimit.Unit
_UNITS = ((_Unit.SECOND, 1), (_Unit.MINUTE, 60), (_Unit.HOUR, 3600), (_Unit.DAY, 86400))

_log = structlog.get_logger("svc_session.rls")


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Principal: ...


async def bucket_of(
    limits: RateLimits, verifier: TokenVerifier, entries: Iterable[tuple[str, str]]
) -> Bucket | None:
    """The one bucket a descriptor counts against, or None when it names none."""
    values = {key: value.strip() for key, value in entries if value.strip()}
    if "access_token" in values:
        scheme, _, rest = values["access_token"].partition(" ")
        token = rest.strip() if scheme.lower() == "bearer" else values["access_token"]
        try:
            principal = await verifier.verify(token)
        except RpcError:
            return None
        if principal.api_key_id:
            return limits.api_key_bucket(principal.api_key_id)
        return limits.user_bucket(principal.user_id, principal.tier)
    if "email" in values:
        return limits.email_bucket(values["email"])
    if "remote_address" in values:
        if values.get("bucket") == "anonymous":
            return limits.anonymous_address_bucket(values["remote_address"])
        return limits.address_bucket(values["remote_address"])
    return None


def rate_limit_of(bucket: Bucket) -> rls_pb2.RateLimitResponse.RateLimit:
    """The bucket's refill as Envoy's requests per unit: the smallest unit with a whole number."""
    return rls_pb2.RateLimitResponse.RateLimit(name=bucket.name, **_per_unit(bucket.size))


def _per_unit(size: BucketSize) -> dict[str, Any]:
    for unit, seconds in _UNITS:
        count = size.refill_per_s * seconds
        if count >= 1 and math.isclose(count, round(count), rel_tol=1e-6):
            return {"requests_per_unit": round(count), "unit": unit}
    return {"requests_per_unit": max(1, round(size.refill_per_s * 86400)), "unit": _Unit.DAY}


class RateLimitServicer:
    """envoy.service.ratelimit.v3.RateLimitService over svc_session's RateLimits."""

    #: At most this many distinct unknown keys are remembered (and warned about).
    _MAX_WARNED = 256

    def __init__(self, limits: RateLimits, verifier: TokenVerifier) -> None:
        self._limits = limits
        self._verifier = verifier
        self._warned: set[str] = set()

    async def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> rls_pb2.RateLimitResponse:
        buckets: list[Bucket | None] = []
        for descriptor in request.descriptors:
            entries = [(entry.key, entry.value) for entry in descriptor.entries]
            self._warn_unknown(request.domain, [key for key, _value in entries])
            buckets.append(await bucket_of(self._limits, self._verifier, entries))
        limited = [bucket for bucket in buckets if bucket is not None]
        decisions = iter(
            await self._limits.take(limited, request.hits_addend or 1, timeout_s=context.time_remaining())
        )
        response = rls_pb2.RateLimitResponse(overall_code=_Code.OK)
        retry_after_s = 0.0
        for bucket in buckets:
            status = response.statuses.add(code=_Code.OK)
            if bucket is None:
                continue
            decision = next(decisions)
            status.current_limit.CopyFrom(rate_limit_of(bucket))
            status.limit_remaining = decision.remaining
            if decision.allowed:
                status.duration_until_reset.FromMilliseconds(round(decision.reset_after_s * 1000))
                continue
            status.code = _Code.OVER_LIMIT
            response.overall_code = _Code.OVER_LIMIT
            wait = decision.retry_after_s if math.isfinite(decision.retry_after_s) else decision.reset_after_s
            status.duration_until_reset.FromMilliseconds(round(wait * 1000))
            retry_after_s = max(retry_after_s, wait)
        if response.overall_code == _Code.OVER_LIMIT:
            seconds = str(max(1, math.ceil(retry_after_s)))
            response.response_headers_to_add.append(base_pb2.HeaderValue(key="retry-after", value=seconds))
        return response

    def _warn_unknown(self, domain: str, keys: Iterable[str]) -> None:
        for key in keys:
            if key in BUCKET_KEYS or key in QUALIFIER_KEYS or key in self._warned:
                continue
            if len(self._warned) < self._MAX_WARNED:
                self._warned.add(key)
                _log.warning("rate limit descriptor key ignored", key=key, domain=domain)


def add_rate_limit_service(server: grpc.aio.Server, limits: RateLimits, verifier: TokenVerifier) -> str:
    """Serve Envoy's rate limit service on server; returns its name for health and reflection."""
    return add_servicer(server, SERVICE, RateLimitServicer(limits, verifier))

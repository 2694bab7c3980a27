"""Where verification keys come from: svc_session's JWKS over HTTP, or a fixed key set.

Trusting a JWKS means trusting whoever can answer its URL, so `HttpKeySource` speaks
plain HTTP only to a loopback address (a sidecar, the local stack) and HTTPS otherwise.

Caching: keys are kept for `cache_ttl_s` (300 s), or for the response's
`Cache-Control: max-age` when that is smaller (but at least one second, whatever the
server says, so that a `max-age=0` cannot turn every new token into a fetch). The cache
only ever changes in one step, under a lock, so concurrent callers share one fetch.

When the keys have expired and a fetch fails (connection refused, timeout, a status other
than 200, a body that is not a JWKS), the stale keys stay in use for at most
`stale_grace_s` (one hour) past their expiry, with a warning in the log each time a
fetch fails: public keys do not go bad, and a short svc_session outage should not take
every other service's authentication down with it. The grace is bounded so that a key
withdrawn from the JWKS while this process cannot see the JWKS stops being trusted
eventually. After a failed fetch the next try waits `retry_s`, so callers meanwhile get
the stale keys (or, with none usable, UNAVAILABLE) at once instead of each waiting out a
timeout. Failures reach callers as UNAVAILABLE, reason AUTH_BACKEND_UNAVAILABLE, with
RetryInfo, and a message that names no host or port.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import Any, Protocol

import httpx
import structlog
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from parley_core.auth._errors import backend_unavailable

_log = structlog.get_logger("parley.auth")

#: However small the server's max-age, keys are kept at least this long.
_MIN_SERVER_TTL_S = 1.0


class KeySource(Protocol):
    """Where the verification keys come from.

    `refresh=True` asks for the newest keys (a token named a `kid` the cached set lacks);
    the verifier asks for it at most once per `min_refetch_s`.
    """

    async def key_set(self, *, refresh: bool) -> KeySet: ...


class StaticKeySource:
    """A fixed key set (tests, benchmarks, a service configured with its keys)."""

    def __init__(self, keys: KeySet) -> None:
        self._keys = keys

    async def key_set(self, *, refresh: bool) -> KeySet:
        return self._keys


class _FetchError(Exception):
    """A JWKS fetch failed; the text is for the server's log only."""


class HttpKeySource:
    """svc_session's JWKS over HTTP(S), cached with an expiry (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 3.0,
        cache_ttl_s: float = 300.0,
        stale_grace_s: float = 3600.0,
        retry_s: float = 2.0,
    ) -> None:
        _check_url(url)
        self._url = url
        self._timeout_s = timeout_s
        self._cache_ttl_s = cache_ttl_s
        self._stale_grace_s = stale_grace_s
        self._retry_s = retry_s
        self._keys: KeySet | None = None
        self._expires_at = 0.0  # time.monotonic() values from here on
        self._usable_until = 0.0
        self._next_try = 0.0
        self._lock = asyncio.Lock()

    async def key_set(self, *, refresh: bool) -> KeySet:
        keys = self._keys
        if keys is not None and not refresh and time.monotonic() < self._expires_at:
            return keys
        async with self._lock:
            now = time.monotonic()
            keys = self._keys
            if keys is not None and not refresh and now < self._expires_at:
                return keys  # fetched by another caller while this one waited
            stale_ok = keys is not None and not refresh and now < self._usable_until
            if now < self._next_try:  # a fetch failed a moment ago
                if stale_ok and keys is not None:
                    return keys
                raise backend_unavailable("signing keys")
            try:
                keys, ttl_s = await self._fetch()
            except _FetchError as error:
                self._next_try = now + self._retry_s
                _log.warning(
                    "jwks fetch failed",
                    url=self._url,
                    error=str(error),
                    serving_stale_keys=stale_ok,
                )
                if stale_ok and self._keys is not None:
                    return self._keys
                raise backend_unavailable("signing keys") from None
            self._keys = keys
            self._expires_at = now + ttl_s
            self._usable_until = self._expires_at + self._stale_grace_s
            self._next_try = 0.0
            return keys

    async def _fetch(self) -> tuple[KeySet, float]:
        try:
            async with httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=False) as client:
                reply = await client.get(self._url, headers={"accept": "application/json"})
        except httpx.HTTPError as error:
            raise _FetchError(f"{type(error).__name__}: {error}") from None
        if reply.status_code != 200:
            raise _FetchError(f"HTTP {reply.status_code}")
        try:
            body: Any = reply.json()
            if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
                raise ValueError("not a JWKS object")
            keys = KeySet.import_key_set(body)  # type: ignore[arg-type]  # checked at run time
        except (ValueError, TypeError, KeyError, JoseError) as error:
            raise _FetchError(f"bad JWKS: {type(error).__name__}") from None
        return keys, self._ttl_of(reply.headers.get("cache-control", ""))

    def _ttl_of(self, cache_control: str) -> float:
        for directive in cache_control.split(","):
            name, _, value = directive.strip().partition("=")
            if name.lower() == "max-age":
                try:
                    max_age = float(int(value.strip().strip('"')))
                except ValueError:
                    continue
                return min(self._cache_ttl_s, max(max_age, _MIN_SERVER_TTL_S))
        return self._cache_ttl_s


def _check_url(url: str) -> None:
    """ValueError unless url is https://, or http:// to a loopback host."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as error:
        raise ValueError(f"not a JWKS URL: {error}") from None
    if not parsed.host:
        raise ValueError("a JWKS URL needs a host")
    if parsed.scheme == "https":
        return
    if parsed.scheme == "http" and _is_loopback(parsed.host):
        return
    raise ValueError(
        "a JWKS URL must be https://, or http:// to a loopback address (127.0.0.0/8, ::1, localhost)"
    )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

"""HttpKeySource: whom it trusts, how long it caches, and how a failing JWKS reaches callers.

The JWKS is served by a real aiohttp server on 127.0.0.1 (loopback only, no network). The
source's clock is the test's own (`clock`): cache lifetimes are stepped through, not slept
through, so a slow fetch on a loaded machine cannot age a cache under a test's feet.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from aiohttp import web
from joserfc.jwk import ECKey

from parley_core.auth import HttpKeySource
from parley_core.errors import RpcError

KEY = ECKey.generate_key("P-256", parameters={"kid": "k1", "use": "sig", "alg": "ES256"})
JWKS = {"keys": [KEY.as_dict(private=False)]}


@dataclass
class Jwks:
    """What the test server answers, and how often it was asked."""

    port: int = 0
    requests: int = 0
    status: int = 200
    body: str = json.dumps(JWKS)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"


class Clock:
    """The monotonic time HttpKeySource reads: still until a test moves it."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """HttpKeySource's clock (its module's `time`, not the event loop's)."""
    fake = Clock()
    monkeypatch.setattr("parley_core.auth._keys.time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


@pytest.fixture
async def jwks() -> AsyncIterator[Jwks]:
    served = Jwks()

    async def handle(request: web.Request) -> web.Response:
        served.requests += 1
        if served.delay_s:
            await asyncio.sleep(served.delay_s)
        return web.Response(
            status=served.status, text=served.body, content_type="application/json", headers=served.headers
        )

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server: Any = site._server
    served.port = int(server.sockets[0].getsockname()[1])
    try:
        yield served
    finally:
        await runner.cleanup()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    "url",
    [
        "http://session.parley.internal/.well-known/jwks.json",
        "http://10.0.0.7/.well-known/jwks.json",
        "http://127.0.0.1.example.com/jwks.json",
        "http://[::2]/jwks.json",
        "ftp://127.0.0.1/jwks.json",
        "https:///jwks.json",
        "jwks.json",
    ],
)
def test_a_url_that_is_not_https_or_loopback_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="JWKS URL"):
        HttpKeySource(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://session.parley.internal/.well-known/jwks.json",
        "http://127.0.0.1:20030/.well-known/jwks.json",
        "http://127.9.8.7/jwks.json",
        "http://localhost:20030/jwks.json",
        "http://[::1]:20030/jwks.json",
    ],
)
def test_https_anywhere_and_http_to_loopback_are_accepted(url: str) -> None:
    HttpKeySource(url)


async def test_keys_are_cached_until_the_ttl_then_fetched_again(jwks: Jwks, clock: Clock) -> None:
    source = HttpKeySource(jwks.url, cache_ttl_s=0.3)

    first = await source.key_set(refresh=False)
    clock.advance(0.29)
    again = await source.key_set(refresh=False)
    requests_while_cached = jwks.requests
    clock.advance(0.02)
    await source.key_set(refresh=False)

    assert again is first
    assert [key.kid for key in first.keys] == ["k1"]
    assert (requests_while_cached, jwks.requests) == (1, 2)


async def test_a_smaller_max_age_from_the_server_shortens_the_ttl(jwks: Jwks, clock: Clock) -> None:
    jwks.headers = {"Cache-Control": "public, max-age=1"}
    source = HttpKeySource(jwks.url, cache_ttl_s=300)

    await source.key_set(refresh=False)
    clock.advance(0.5)
    await source.key_set(refresh=False)
    requests_within_max_age = jwks.requests
    clock.advance(0.6)
    await source.key_set(refresh=False)

    assert (requests_within_max_age, jwks.requests) == (1, 2)


async def test_a_larger_max_age_does_not_lengthen_the_ttl(jwks: Jwks, clock: Clock) -> None:
    jwks.headers = {"Cache-Control": "max-age=3600"}
    source = HttpKeySource(jwks.url, cache_ttl_s=0.2)

    await source.key_set(refresh=False)
    clock.advance(0.25)
    await source.key_set(refresh=False)

    assert jwks.requests == 2


async def test_refresh_fetches_even_while_cached(jwks: Jwks) -> None:
    source = HttpKeySource(jwks.url)

    await source.key_set(refresh=False)
    await source.key_set(refresh=True)

    assert jwks.requests == 2


async def test_concurrent_callers_share_one_fetch(jwks: Jwks) -> None:
    jwks.delay_s = 0.05
    source = HttpKeySource(jwks.url)

    sets = await asyncio.gather(*(source.key_set(refresh=False) for _ in range(10)))

    assert jwks.requests == 1
    assert all(s is sets[0] for s in sets)


def _assert_unavailable_without_address(error: RpcError, port: int) -> None:
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "AUTH_BACKEND_UNAVAILABLE")
    assert error.retry_after_s == 1.0
    assert "127.0.0.1" not in error.message
    assert str(port) not in error.message
    assert "jwks" not in error.message.lower()


async def test_connection_refused_is_unavailable_with_retry_info_and_no_address() -> None:
    port = _closed_port()
    source = HttpKeySource(f"http://127.0.0.1:{port}/.well-known/jwks.json")

    with pytest.raises(RpcError) as refused:
        await source.key_set(refresh=False)

    _assert_unavailable_without_address(refused.value, port)


@pytest.mark.parametrize(
    ("status", "body", "delay_s"),
    [
        (500, "oops", 0.0),
        (302, "", 0.0),
        (200, "{not json", 0.0),
        (200, json.dumps({"keys": "none"}), 0.0),
        (200, json.dumps({"keys": [{"kty": "EC", "crv": "P-256"}]}), 0.0),
        (200, json.dumps(JWKS), 1.0),  # slower than the timeout
    ],
    ids=["500", "redirect", "bad-json", "not-a-jwks", "bad-key", "timeout"],
)
async def test_a_failing_fetch_is_unavailable_with_retry_info_and_no_address(
    jwks: Jwks, status: int, body: str, delay_s: float
) -> None:
    jwks.status, jwks.body, jwks.delay_s = status, body, delay_s
    source = HttpKeySource(jwks.url, timeout_s=0.3)

    with pytest.raises(RpcError) as refused:
        await source.key_set(refresh=False)

    _assert_unavailable_without_address(refused.value, jwks.port)


async def test_expired_keys_stay_in_use_for_the_grace_while_the_jwks_fails(jwks: Jwks, clock: Clock) -> None:
    source = HttpKeySource(jwks.url, cache_ttl_s=0.2, stale_grace_s=0.6, retry_s=0.05)
    keys = await source.key_set(refresh=False)
    jwks.status = 503

    clock.advance(0.25)  # expired, within the grace
    stale = await source.key_set(refresh=False)
    tried = jwks.requests
    clock.advance(0.6)  # past the grace (0.2 + 0.6 after the fetch), and past the retry
    with pytest.raises(RpcError) as refused:
        await source.key_set(refresh=False)

    assert stale is keys
    assert tried == 2
    _assert_unavailable_without_address(refused.value, jwks.port)


async def test_after_a_failed_fetch_callers_are_answered_at_once_until_the_retry(
    jwks: Jwks, clock: Clock
) -> None:
    jwks.status = 500
    source = HttpKeySource(jwks.url, retry_s=0.3)
    with pytest.raises(RpcError):
        await source.key_set(refresh=False)
    jwks.status = 200

    clock.advance(0.29)
    with pytest.raises(RpcError) as too_soon:
        await source.key_set(refresh=False)
    requests_before_retry = jwks.requests
    clock.advance(0.02)
    keys = await source.key_set(refresh=False)

    assert too_soon.value.reason == "AUTH_BACKEND_UNAVAILABLE"
    assert (requests_before_retry, jwks.requests) == (1, 2)
    assert [key.kid for key in keys.keys] == ["k1"]

"""Staying signed in: a token refresh that cannot be made (the network, the edge's rate
limit) keeps the session until one can; a refresh token the server refuses ends it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import Page, Route, expect

from tests.e2e.ui import conversations, eventually, sign_up

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REFRESH = "**/parley.session.v1.SessionService/RefreshToken"
#: Where the app keeps its tokens (web/src/auth.ts).
CREDENTIALS = "parley.credentials"


async def stored(page: Page) -> dict[str, Any] | None:
    found: dict[str, Any] | None = await page.evaluate(
        "(key) => JSON.parse(localStorage.getItem(key) ?? 'null')", CREDENTIALS
    )
    return found


async def change_stored(page: Page, expires_in_ms: int, refresh_token: str | None = None) -> None:
    """Make the stored access token expire `expires_in_ms` from now (and maybe swap the
    refresh token), as if the page had been left open that long."""
    await page.evaluate(
        """([key, inMs, refreshToken]) => {
             const tokens = JSON.parse(localStorage.getItem(key));
             tokens.accessExpiresMs = Date.now() + inMs;
             if (refreshToken !== null) tokens.refreshToken = refreshToken;
             localStorage.setItem(key, JSON.stringify(tokens));
           }""",
        [CREDENTIALS, expires_in_ms, refresh_token],
    )


async def test_a_refresh_that_cannot_be_made_keeps_the_session_until_one_can(page: Page) -> None:
    await sign_up(page)
    before = await stored(page)
    assert before is not None
    blocked: list[str] = []

    async def unreachable(route: Route) -> None:
        blocked.append(route.request.url)
        await route.abort("connectionreset")

    await page.route(REFRESH, unreachable)

    # Inside the refresh lead: the refresh fails, and the token, still valid, is used.
    await change_stored(page, 10_000)
    await page.reload()
    await expect(conversations(page)).to_be_visible()
    await expect(page.get_by_role("alert")).to_have_count(0)
    assert blocked, "the page tried to refresh"
    assert (await stored(page) or {}).get("refreshToken") == before["refreshToken"]

    # Expired: the page says the call failed, and the person stays signed in.
    await change_stored(page, -1_000)
    await page.reload()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    # Every part of the page that could not load says why, in words a person can act on.
    await expect(page.get_by_role("alert").first).to_be_visible()
    for alert in await page.get_by_role("alert").all():
        await expect(alert).to_have_text(re.compile("cannot be reached"))
    assert "signin" not in page.url
    assert (await stored(page) or {}).get("refreshToken") == before["refreshToken"]

    # Once the edge answers again, the next call refreshes: new tokens, no error.
    await page.unroute(REFRESH)
    await page.reload()
    await expect(conversations(page)).to_be_visible()
    after = await eventually(
        lambda: stored(page),
        lambda tokens: tokens is not None and tokens["refreshToken"] != before["refreshToken"],
    )
    assert after is not None
    assert after["accessToken"] != before["accessToken"]
    await expect(page.get_by_role("alert")).to_have_count(0)


async def test_a_refresh_token_the_server_refuses_signs_the_page_out(page: Page) -> None:
    await sign_up(page)

    await change_stored(page, -1_000, refresh_token="made-up")
    await page.reload()

    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert "/signin" in page.url
    assert await stored(page) is None

"""Hostile text in a conversation: the scripted model echoes markup back, and neither the
question nor the answer may run script, submit a form, or make the browser call another
origin. The document carries a Content-Security-Policy."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.async_api import Page, Route, expect

from tests.e2e.conftest import Browsing
from tests.e2e.ui import answers, body, sign_up, start_chat, stop_button

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

HOSTILE = (
    "<script>window.__pwned=1</script> "
    '<img src=x onerror="window.__pwned=2"> '
    "[click](javascript:window.__pwned=3) "
    '<form action="https://evil.example/" method="post"><input name=a value=b><button>go</button></form> '
    '<img src="https://evil.example/x.png">'
)


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def test_the_document_has_a_content_security_policy(page: Page) -> None:
    response = await page.goto("/signin")
    assert response is not None
    assert response.ok, response.status
    assert response.headers.get("content-security-policy", "").strip(), response.headers


async def test_markup_in_a_message_and_its_echo_stays_inert(
    page: Page, browsing: Browsing, public_url: str
) -> None:
    # Nothing may leave for another origin; such a request is recorded, then refused here.
    async def refuse(route: Route) -> None:
        await route.abort()

    await page.context.route(lambda url: origin(url) != public_url, refuse)
    await sign_up(page)
    # The run prints "Executing inline event handler violates ... script-src-attr" console
    # errors here. They come from DOMPurify parsing the answer with DOMParser: Chromium checks
    # an on* attribute against the page's CSP as it is parsed, even in that inert document,
    # and nothing in it ever runs. The assertions below are what matters: no handler reaches
    # the page and window.__pwned stays unset.
    await start_chat(page, HOSTILE)
    # Rendered, the echo is not its source text: wait for the stream to end instead.
    await expect(body(answers(page).last)).to_contain_text("you said:")
    await expect(stop_button(page)).to_be_hidden()

    bodies = page.locator(".message-body")
    await expect(bodies).to_have_count(2)
    assert await page.evaluate("typeof window.__pwned") == "undefined"
    for dangerous in ("script", "form", "iframe", "object", "embed", "[onerror]", "[onload]", "[onclick]"):
        await expect(bodies.locator(dangerous)).to_have_count(0)
    hrefs = await bodies.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href') || '')")
    assert not [h for h in hrefs if h.strip().lower().startswith("javascript:")], hrefs
    # A foreign image left in the page would be a tracking pixel even where the CSP stops it.
    sources = await bodies.locator("img").evaluate_all("images => images.map(i => i.src)")
    assert not [src for src in sources if origin(src) != public_url], sources

    # Clicking what became of the link does nothing harmful either.
    links = bodies.get_by_text("click", exact=True)
    for index in range(await links.count()):
        await links.nth(index).click()
    assert await page.evaluate("typeof window.__pwned") == "undefined"
    assert origin(page.url) == public_url, page.url

    foreign = [url for url in browsing.watch.requests if origin(url) != public_url]
    assert not foreign, f"requests to other origins: {foreign}"

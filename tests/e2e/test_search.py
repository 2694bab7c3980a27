"""Search in the browser: a message is found in each mode once the indexer has it, and a
result opens its conversation at that message."""

from __future__ import annotations

import re
import secrets

import pytest
from playwright.async_api import Locator, Page, expect

from tests.e2e.ui import SCRIPTED, answers, conversations, echo, eventually, finished, sign_up, start_chat

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

#: The indexer works moments after a message is written; a search waits for it this long.
INDEXED_WITHIN_S = 60.0


def into(page: Page, conversation: str) -> Locator:
    """Links to a message of conversation."""
    return page.locator(f'a[href^="/c/{conversation}?m="]')


async def search(page: Page, query: str, mode: str) -> Locator:
    """Run a search from the search page; the result links."""
    await page.get_by_role("textbox", name="Search your conversations").fill(query)
    await page.get_by_role("combobox", name="Mode").select_option(label=mode)
    await page.get_by_role("button", name="Search", exact=True).click()
    return page.get_by_role("listitem").get_by_role("link")


async def search_until_found(page: Page, query: str, mode: str, conversation: str) -> Locator:
    """Search until a result links into conversation (the index follows the writes)."""
    hits = page.get_by_role("listitem").locator(into(page, conversation))

    async def found() -> int:
        await search(page, query, mode)
        try:
            await expect(hits.first).to_be_visible(timeout=2_000)
        except AssertionError:
            return 0
        return await hits.count()

    await eventually(found, lambda count: count > 0, timeout_s=INDEXED_WITHIN_S, every_s=0.5)
    return hits


async def test_a_message_is_found_in_every_mode_and_its_result_opens_it(page: Page) -> None:
    await sign_up(page)
    word = f"zeppelin{secrets.token_hex(3)}"
    said = f"My {word} needs new mooring ropes before the storm"
    conversation = await start_chat(page, said, SCRIPTED)
    await finished(page, answers(page).last, echo(said))
    # The user's one conversation: its link in the sidebar carries its title.
    title = await conversations(page).get_by_role("link").inner_text()
    assert title.strip(), "the conversation's link has no title"

    await page.get_by_role("link", name="Search", exact=True).click()
    await expect(page).to_have_url(re.compile(r"/search$"))
    await search_until_found(page, word, "Full text", conversation)
    await search_until_found(page, said, "Semantic", conversation)
    hits = await search_until_found(page, word, "Hybrid", conversation)

    # Each result sits in a list item with the conversation's title and a snippet.
    hit = hits.first
    item = page.get_by_role("listitem").filter(has=into(page, conversation)).first
    await expect(item).to_contain_text(title.strip())
    await expect(item).to_contain_text(word)
    href = await hit.get_attribute("href")
    assert href is not None
    found = re.fullmatch(rf"/c/{conversation}\?m=([^&#]+)", href)
    assert found, href
    message = found.group(1)

    await hit.click()
    await expect(page).to_have_url(re.compile(rf"/c/{conversation}\?m={message}$"))
    opened = page.locator(f'article[data-message$="/conversations/{conversation}/messages/{message}"]')
    await expect(opened).to_be_visible()
    await expect(opened.locator(".message-body")).to_contain_text(word)

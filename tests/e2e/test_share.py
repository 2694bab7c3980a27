"""Sharing in the browser: a link made in the Share dialog opens the conversation for a
signed-out visitor; an expired link is refused; a password-protected one asks first."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import Page, expect

from parley.history.v1 import history_pb2
from tests.e2e.api import Edge
from tests.e2e.conftest import Browsing, Screenshots
from tests.e2e.ui import Account, answers, body, echo, finished, questions, sign_up, start_chat

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

HISTORY = "/parley.history.v1.HistoryService"


async def shared_title(api: Edge, token: str, password: str = "") -> str:
    """The title the public page should show, as the API gives it to anyone with the link."""
    shared = await api.ok(
        f"{HISTORY}/GetSharedConversation",
        history_pb2.GetSharedConversationRequest(token=token, password=password),
        history_pb2.GetSharedConversationResponse,
    )
    return shared.title


async def share_link(
    api: Edge, account: Account, conversation: str, *, expire_in: timedelta | None, password: str = ""
) -> tuple[str, datetime | None]:
    """A share link made through the API (for expiries the dialog does not offer): its token
    and when it expires."""
    signed_in = await api.sign_in(account.email, account.password)
    expire_time = datetime.now(UTC) + expire_in if expire_in is not None else None
    link = history_pb2.ShareLink()
    if expire_time is not None:
        link.expire_time.FromDatetime(expire_time)
    created = await api.ok(
        f"{HISTORY}/CreateShareLink",
        history_pb2.CreateShareLinkRequest(
            parent=f"{signed_in.user.name}/conversations/{conversation}",
            share_link=link,
            password=password,
            request_id=str(uuid.uuid4()),
        ),
        history_pb2.CreateShareLinkResponse,
        token=signed_in.credentials.access_token,
    )
    return created.share_link.token, expire_time


async def test_a_link_from_the_share_dialog_shows_the_conversation_to_a_signed_out_visitor(
    page: Page, browsing: Browsing, public_url: str, api: Edge, screenshots: Screenshots
) -> None:
    await sign_up(page)
    said = "What should a shared conversation look like?"
    await start_chat(page, said)
    await finished(page, answers(page).last, echo(said))

    await page.get_by_role("button", name="Share", exact=True).click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_role("combobox", name="Expires in").select_option(label="1 minute")
    await dialog.get_by_role("button", name="Create link").click()
    link_box = dialog.get_by_role("textbox", name="Share link")
    await expect(link_box).to_have_value(re.compile(rf"^{re.escape(public_url)}/s/\S+$"))
    await expect(link_box).to_have_attribute("readonly", "")
    link = await link_box.input_value()

    visitor = await browsing.new_page()
    await visitor.goto(link)
    title = await shared_title(api, link.rsplit("/s/", 1)[1])
    await expect(visitor.get_by_role("heading", name=title)).to_be_visible()
    await expect(body(questions(visitor))).to_have_text([said])
    await expect(body(answers(visitor))).to_have_text([echo(said)])
    # Read-only: nothing to send, edit or regenerate.
    for control in ("Send", "Edit", "Regenerate", "Share"):
        await expect(visitor.get_by_role("button", name=control, exact=True)).to_have_count(0)
    await screenshots.save(visitor, "shared")


async def test_an_expired_link_is_refused(page: Page, browsing: Browsing, api: Edge) -> None:
    account = await sign_up(page)
    said = "This link will not last"
    conversation = await start_chat(page, said)
    await finished(page, answers(page).last, echo(said))
    token, expire_time = await share_link(api, account, conversation, expire_in=timedelta(seconds=5))
    assert expire_time is not None
    # It worked while it lasted (the first test shows such a link in the browser).
    assert await shared_title(api, token)

    await asyncio.sleep(max(0.0, (expire_time - datetime.now(UTC)).total_seconds()) + 0.5)
    visitor = await browsing.new_page()
    await visitor.goto(f"/s/{token}")
    await expect(visitor.get_by_text(re.compile("expired|not available", re.IGNORECASE))).to_be_visible()
    await expect(answers(visitor)).to_have_count(0)
    await expect(questions(visitor)).to_have_count(0)


async def test_a_password_protected_link_opens_after_the_password(
    page: Page, browsing: Browsing, api: Edge
) -> None:
    account = await sign_up(page)
    said = "Only for those who know the word"
    conversation = await start_chat(page, said)
    await finished(page, answers(page).last, echo(said))
    token, _ = await share_link(api, account, conversation, expire_in=None, password="swordfish")

    visitor = await browsing.new_page()
    await visitor.goto(f"/s/{token}")
    await expect(answers(visitor)).to_have_count(0)
    await visitor.get_by_label("Password", exact=True).fill("swordfish")
    await visitor.get_by_role("button", name="Open", exact=True).click()
    await expect(body(answers(visitor))).to_have_text([echo(said)])

"""A chat in the browser: an answer streams in visible steps, stops when asked, survives a
reload mid-way, streams on another device signed in as the same person, an edited question
starts a second branch, and a message that could not be sent is kept to send again."""

from __future__ import annotations

import asyncio
import itertools
import re
import time

import pytest
from playwright.async_api import Page, Route, expect

from tests.e2e.conftest import Browsing, Screenshots
from tests.e2e.ui import (
    answers,
    body,
    echo,
    finished,
    questions,
    send,
    settled,
    sign_in,
    sign_up,
    start_chat,
    stop_button,
    text_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

#: 40 words at 8 a second: five seconds of visible streaming.
SLOW = "[scripted tokens_per_second=8 reply_tokens=40]"
#: 60 words at 4 a second: fifteen seconds, time to stop or reload mid-way.
SLOWER = "[scripted tokens_per_second=4 reply_tokens=60]"
#: The gRPC-Web call that starts a turn.
STREAM_TURN = "**/parley.chat.v1.ChatService/StreamTurn"


async def test_an_answer_streams_into_the_page_word_by_word(page: Page, screenshots: Screenshots) -> None:
    await sign_up(page)
    said = f"Tell me how streaming looks in a browser {SLOW}"
    full = echo(said, reply_tokens=40)
    await start_chat(page, said)

    answer = answers(page).last
    await expect(stop_button(page)).to_be_visible()
    seen: list[str] = []
    deadline = time.monotonic() + 60
    while not seen or seen[-1] != full:
        assert time.monotonic() < deadline, f"the answer did not finish: {seen}"
        text = await text_of(answer)
        if text and (not seen or text != seen[-1]):
            seen.append(text)
        await asyncio.sleep(0.02)

    # What shows before the first word (a typing indicator) is no part of the answer.
    steps = list(itertools.dropwhile(lambda text: not full.startswith(text), seen))
    partial = steps[:-1]
    assert len(partial) >= 3, f"the answer appeared in {len(steps)} steps: {seen}"
    # Each step extends the one before.
    for earlier, later in itertools.pairwise(steps):
        assert later.startswith(earlier), (earlier, later)
    await finished(page, answer, full)
    await expect(body(questions(page).last)).to_contain_text("Tell me how streaming looks in a browser")
    await screenshots.save(page, "chat")


async def test_stop_keeps_the_partial_answer_also_after_a_reload(page: Page) -> None:
    await sign_up(page)
    said = f"Please stop me half way {SLOWER}"
    full = echo(said, reply_tokens=60)
    await start_chat(page, said)
    answer = answers(page).last
    await expect(body(answer)).to_contain_text("you said: Please stop me")

    await stop_button(page).click()
    await expect(stop_button(page)).to_be_hidden()
    stopped = await settled(answer)
    assert full.startswith(stopped), stopped
    assert len(stopped.split()) < 60, stopped

    await page.reload()
    await expect(body(answers(page).last)).to_have_text(stopped)
    await expect(stop_button(page)).to_be_hidden()


async def test_after_a_reload_mid_answer_the_same_answer_continues_to_its_end(page: Page) -> None:
    await sign_up(page)
    said = f"Keep going while I reload {SLOWER}"
    full = echo(said, reply_tokens=60)
    await start_chat(page, said)
    answer = answers(page).last
    await expect(body(answer)).to_contain_text("you said: Keep going")
    message = await answer.get_attribute("data-message")
    assert message, "the assistant's article has no data-message"

    await page.reload()
    same = page.locator(f'article[data-message="{message}"]')
    await expect(same).to_have_count(1)
    # Still under way after the reload: the stream picked up where it was, not a finished copy.
    await expect(stop_button(page)).to_be_visible()
    resumed = await text_of(same)
    assert full.startswith(resumed), resumed
    assert len(resumed) < len(full), resumed
    await finished(page, same, full)
    await expect(answers(page)).to_have_count(1)


async def test_an_answer_being_written_streams_on_another_device_too(page: Page, browsing: Browsing) -> None:
    account = await sign_up(page)
    said = f"Follow me from the other laptop {SLOWER}"
    full = echo(said, reply_tokens=60)
    conversation = await start_chat(page, said)
    await expect(body(answers(page).last)).to_contain_text("you said: Follow me")

    other = await browsing.new_page()
    await sign_in(other, account)
    await other.goto(f"/c/{conversation}")
    answer = answers(other).last
    # Still being written there: shown streaming, with Stop, and growing.
    await expect(stop_button(other)).to_be_visible()
    await expect(body(answer)).to_contain_text("you said: Follow me")
    first = await text_of(answer)
    assert full.startswith(first), first
    assert len(first) < len(full), first
    await expect(body(answer)).not_to_have_text(first)
    await finished(other, answer, full)
    await finished(page, answers(page).last, full)
    await expect(answers(other)).to_have_count(1)


async def test_editing_a_question_starts_a_second_branch_and_both_can_be_shown(page: Page) -> None:
    await sign_up(page)
    await start_chat(page, "the first version")
    await finished(page, answers(page).last, echo("the first version"))

    await page.get_by_role("button", name="Edit", exact=True).click()
    await page.get_by_role("textbox", name="Edit message").fill("the second version")
    await page.get_by_role("button", name="Save and send").click()

    await expect(page.get_by_text("2 / 2", exact=True)).to_be_visible()
    await finished(page, answers(page).last, echo("the second version"))
    await expect(body(questions(page).last)).to_have_text("the second version")

    await page.get_by_role("button", name="Previous branch").click()
    await expect(page.get_by_text("1 / 2", exact=True)).to_be_visible()
    await expect(body(questions(page).last)).to_have_text("the first version")
    await expect(body(answers(page).last)).to_have_text(echo("the first version"))

    await page.get_by_role("button", name="Next branch").click()
    await expect(page.get_by_text("2 / 2", exact=True)).to_be_visible()
    await expect(body(questions(page).last)).to_have_text("the second version")
    await expect(body(answers(page).last)).to_have_text(echo("the second version"))


async def test_a_message_that_could_not_be_sent_goes_back_into_the_composer(page: Page) -> None:
    await sign_up(page)
    refused: list[str] = []

    async def unreachable(route: Route) -> None:
        refused.append(route.request.url)
        await route.abort("connectionreset")

    await page.route(STREAM_TURN, unreachable)
    await send(page, "a question worth keeping")

    await expect(page.get_by_role("alert").first).to_have_text(re.compile("cannot be reached"))
    assert refused, "the page tried to start the turn"
    box = page.get_by_role("textbox", name="Message")
    await expect(box).to_have_value("a question worth keeping")

    # Sent again once the edge answers: the same words, answered, and the composer empty.
    await page.unroute(STREAM_TURN)
    await page.get_by_role("button", name="Send", exact=True).click()
    await finished(page, answers(page).last, echo("a question worth keeping"))
    await expect(box).to_have_value("")

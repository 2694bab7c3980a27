"""The web app as a person uses it, by the accessible names of its UI contract
(docs/stack/browser.md): sign up, choose the scripted model, send, read the answers."""

from __future__ import annotations

import asyncio
import itertools
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from playwright.async_api import Locator, Page, expect

from parley.session.v1 import session_pb2
from tests.e2e.api import Edge
from tests.integration.session.helpers import VERIFY_SUBJECT, wait_for_mail

T = TypeVar("T")

#: The scripted test model's display name (model_repo/catalog.toml).
SCRIPTED = "Parley Scripted (tests)"
PASSWORD = "a browser's long passphrase"
#: How long an answer of the scripted model may take to finish once it started.
ANSWER_TIMEOUT_MS = 60_000
#: Where a conversation's page lives: /c/<conversation id>, maybe with ?m=<message id>.
CONVERSATION_PATH = re.compile(r"/c/([^/?#]+)")


@dataclass(frozen=True)
class Account:
    email: str
    password: str
    display_name: str


def echo(said: str, reply_tokens: int = 0) -> str:
    """What parley-scripted answers to one user turn (model_repo/parley-scripted/1/
    scripted_reply.py): "you said: " and the words, directives left out, cycled or cut to
    reply_tokens words when that is set."""
    spoken = re.sub(r"\[scripted(?:\s+\w+=[^\s\]]+)+\s*\]", " ", said)
    words = f"you said: {' '.join(spoken.split())}".split()
    if reply_tokens:
        words = list(itertools.islice(itertools.cycle(words), reply_tokens))
    return " ".join(words)


def words(text: str | None) -> str:
    """text with its whitespace collapsed, as the tests compare rendered messages."""
    return " ".join((text or "").split())


async def sign_up(page: Page, display_name: str = "Ada Lovelace") -> Account:
    """A new account made through /signup; returns once the signed-in shell shows."""
    account = Account(f"e2e-{secrets.token_hex(5)}@parley.test", PASSWORD, display_name)
    await page.goto("/signup")
    await page.get_by_label("Email", exact=True).fill(account.email)
    await page.get_by_label("Display name", exact=True).fill(account.display_name)
    await page.get_by_label("Password", exact=True).fill(account.password)
    await page.get_by_role("button", name="Create account").click()
    await expect(conversations(page)).to_be_visible()
    return account


async def sign_in(page: Page, account: Account) -> None:
    """Sign in through /signin (another device of the same person); returns once the shell shows."""
    await page.goto("/signin")
    await page.get_by_label("Email", exact=True).fill(account.email)
    await page.get_by_label("Password", exact=True).fill(account.password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(conversations(page)).to_be_visible()


async def verify_email(page: Page, mailbox: Path, account: Account, api: Edge) -> None:
    """Open the link of the verification mail in page, as the account's owner would; returns
    once the account is verified."""
    [mail, *_] = await wait_for_mail(mailbox, account.email, VERIFY_SUBJECT)
    [link] = re.findall(r"\S+/verify-email\?token=\S+", mail["body"])
    await page.goto(link)
    token = (await api.sign_in(account.email, account.password)).credentials.access_token

    async def user() -> session_pb2.User:
        current = await api.ok(
            "/parley.session.v1.SessionService/GetCurrentUser",
            session_pb2.GetCurrentUserRequest(),
            session_pb2.GetCurrentUserResponse,
            token=token,
        )
        return current.user

    await eventually(user, lambda found: found.email_verified, timeout_s=15)


def conversations(page: Page) -> Locator:
    """The navigation landmark listing the user's conversations."""
    return page.get_by_role("navigation", name="Conversations")


def answers(page: Page) -> Locator:
    return page.get_by_role("article", name="Assistant", exact=True)


def questions(page: Page) -> Locator:
    return page.get_by_role("article", name="You", exact=True)


def body(message: Locator) -> Locator:
    """The rendered text of one message article."""
    return message.locator(".message-body")


def stop_button(page: Page) -> Locator:
    return page.get_by_role("button", name="Stop", exact=True)


async def send(page: Page, text: str, model: str = SCRIPTED) -> None:
    """Choose model and send text as the next message of the open conversation."""
    await page.get_by_role("combobox", name="Model").select_option(label=model)
    await page.get_by_role("textbox", name="Message").fill(text)
    await page.get_by_role("button", name="Send", exact=True).click()


async def start_chat(page: Page, text: str, model: str = SCRIPTED) -> str:
    """A new conversation from /, its first message sent; returns the conversation's id
    (from the /c/<id> address the app moves to)."""
    await page.goto("/")
    await send(page, text, model)
    await page.wait_for_url(CONVERSATION_PATH)
    found = CONVERSATION_PATH.search(page.url)
    assert found is not None, page.url
    return found.group(1)


async def finished(page: Page, answer: Locator, expected: str) -> None:
    """Wait until answer shows expected in full and no answer is streaming any more."""
    await expect(body(answer)).to_have_text(expected, timeout=ANSWER_TIMEOUT_MS)
    await expect(stop_button(page)).to_be_hidden()


async def text_of(message: Locator) -> str:
    return words(await body(message).text_content())


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    timeout_s: float = 30.0,
    every_s: float = 0.1,
) -> T:
    """probe() until done(result); the result, or AssertionError with the last one at the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not done after {timeout_s} s; last: {result!r}")
        await asyncio.sleep(every_s)


async def settled(message: Locator, quiet_s: float = 1.5, timeout_s: float = 30.0) -> str:
    """The message's text once it has not changed for quiet_s (a stopped stream stays put)."""
    deadline = time.monotonic() + timeout_s
    last, since = await text_of(message), time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, f"still changing after {timeout_s} s: {last!r}"
        await asyncio.sleep(0.1)
        now = await text_of(message)
        if now != last:
            last, since = now, time.monotonic()
    return last

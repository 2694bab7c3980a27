"""Browser tests: Debian's headless Chromium, driven by Playwright, against the running platform
through Envoy's public address (the web app and its gRPC-Web calls share that origin).

One browser for the session, a fresh context (cookies, storage) per test. Every page of a
test's context is watched: an uncaught page error fails the test, console errors are printed
with its output, every request URL is recorded. Screenshots go to PARLEY_E2E_SCREENSHOTS
(default .state/screenshots/), and with PARLEY_E2E_UPDATE_DOCS=1 the README's also to
docs/screenshots/.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    WebError,
    async_playwright,
    expect,
)

from parley_stack.config import REPO_ROOT
from parley_stack.servers import CATALOG
from parley_stack.servers.tools import ChromiumTool
from parley_stack.testing import LocalStack
from tests.e2e.api import Edge

#: What a chat turn needs behind Envoy: the scripted model on Triton, the stores, the event
#: bus and the search index; and the browser.
PLATFORM = ("envoy", "triton", "cassandra", "pulsar", "redis", "weaviate", "chromium")
#: Shots the README shows (docs/screenshots/), refreshed when PARLEY_E2E_UPDATE_DOCS=1.
DOCS_SHOTS = frozenset({"chat", "shared", "admin"})
VIEWPORT = {"width": 1280, "height": 800}

expect.set_options(timeout=15_000)


def screenshots_dir() -> Path:
    return Path(os.environ.get("PARLEY_E2E_SCREENSHOTS") or REPO_ROOT / ".state" / "screenshots")


_saved: list[Path] = []


class Screenshots:
    """Saves screenshots by name; the run's summary lists them."""

    def __init__(self, folder: Path, docs: Path | None) -> None:
        self.folder = folder
        self.docs = docs

    async def save(self, page: Page, name: str, *, full_page: bool = False) -> Path:
        """The page as the viewport shows it (what a README needs), or all of it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{name}.png"
        await page.screenshot(path=str(path), full_page=full_page)
        _saved.append(path)
        if self.docs is not None and name in DOCS_SHOTS:
            self.docs.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, self.docs / path.name)
            _saved.append(self.docs / path.name)
        return path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _saved:
        terminalreporter.write_line(f"e2e screenshots in {screenshots_dir()}:")
        for path in _saved:
            terminalreporter.write_line(f"  {path}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so `browsing` knows whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def platform(local_stack: LocalStack) -> LocalStack:
    """The whole platform behind Envoy, with the web app where the stack serves one."""
    local_stack.ensure(*PLATFORM, *(["web"] if "web" in CATALOG else []))
    return local_stack


@pytest.fixture(scope="session")
def public_url(platform: LocalStack) -> str:
    """The origin a person opens: Envoy's public address."""
    host, port = platform.endpoint("envoy", "public")
    return f"http://{host}:{port}"


@pytest.fixture(scope="session")
def api(platform: LocalStack) -> Edge:
    return Edge(*platform.endpoint("envoy", "public"))


@pytest.fixture(scope="session")
def mailbox(platform: LocalStack) -> Path:
    """svc_session's dev mailbox: each mail as a JSON file per recipient."""
    return platform.config.data_dir("mailbox")


@pytest.fixture(scope="session")
def screenshots() -> Screenshots:
    update_docs = os.environ.get("PARLEY_E2E_UPDATE_DOCS") == "1"
    return Screenshots(screenshots_dir(), REPO_ROOT / "docs" / "screenshots" if update_docs else None)


@pytest.fixture(scope="session")
async def browser(platform: LocalStack) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(ChromiumTool.binary))
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Watch:
    """What the pages of one context did: uncaught errors, console errors, requests."""

    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def attach(self, context: BrowserContext) -> None:
        context.on("weberror", self._page_error)
        context.on("console", self._console)
        context.on("request", self._request)

    def _page_error(self, error: WebError) -> None:
        self.page_errors.append(f"{error.page.url if error.page else '?'}: {error.error}")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(f"{message.page.url if message.page else '?'}: {message.text}")
            print(f"console error: {self.console_errors[-1]}")

    def _request(self, request: Request) -> None:
        self.requests.append(request.url)


@dataclass
class Browsing:
    """Fresh contexts for one test (a signed-out visitor, a second person), all watched."""

    browser: Browser
    public_url: str
    watch: Watch
    contexts: list[BrowserContext] = field(default_factory=list)

    async def new_context(self) -> BrowserContext:
        context = await self.browser.new_context(base_url=self.public_url, viewport=VIEWPORT)  # type: ignore[arg-type]
        self.watch.attach(context)
        self.contexts.append(context)
        return context

    async def new_page(self) -> Page:
        return await (await self.new_context()).new_page()


@pytest.fixture
async def browsing(
    browser: Browser, public_url: str, request: pytest.FixtureRequest, screenshots: Screenshots
) -> AsyncIterator[Browsing]:
    made = Browsing(browser, public_url, Watch())
    try:
        yield made
        failed = getattr(request.node, "report_call", None)
        if failed is not None and failed.failed:
            for index, context in enumerate(made.contexts):
                for number, page in enumerate(context.pages):
                    name = f"{request.node.name}-failed-{index}-{number}"
                    await screenshots.save(page, name, full_page=True)
    finally:
        for context in made.contexts:
            await context.close()
    assert not made.watch.page_errors, f"uncaught errors in the page: {made.watch.page_errors}"


@pytest.fixture
async def page(browsing: Browsing) -> Page:
    """A page in a fresh context of its own (signed out, empty storage)."""
    return await browsing.new_page()

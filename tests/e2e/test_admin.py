"""The admin page: an admin sees the spend charts and the top users over real ledger data; a
user who is not an admin sees neither the page nor, through the API, the numbers."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pulsar
import pytest
from playwright.async_api import Page, expect

from parley.ledger.v1 import ledger_pb2
from parley.session.v1 import session_pb2
from parley_core.stubs import ledger_stub
from parley_stack.config import REPO_ROOT
from parley_stack.servers.services import SessionService
from parley_stack.testing import LocalStack
from tests.e2e.api import Edge
from tests.e2e.conftest import Browsing, Screenshots
from tests.e2e.ui import PASSWORD, answers, echo, eventually, finished, sign_up, start_chat, verify_email
from tests.integration.ledger.helpers import Usage, publish, usage_producer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

CHARTS = ("Cost by day", "Cost by model", "Turns by model")
ADMIN_LOAD_MS = 60_000

#: True once the canvas labelled `label` has a pixel that is not transparent (a drawn chart).
DRAWN = """label => {
  const canvas = document.querySelector(`canvas[aria-label="${label}"]`);
  if (!canvas || !canvas.width || !canvas.height) return false;
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  for (let alpha = 3; alpha < pixels.length; alpha += 4) if (pixels[alpha] !== 0) return true;
  return false;
}"""


async def grant_admin(stack: LocalStack, email: str) -> None:
    """`parley admin grant email`, with the settings of the test session's stack."""
    env = {**os.environ, **SessionService(stack.config).environment()}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "svc_session", "admin", "grant", email,
        cwd=REPO_ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await process.communicate()
    assert process.returncode == 0, out.decode()


async def register(api: Edge, email: str, display_name: str) -> str:
    """A user made through the API (no browser needed to have spent money); its resource name."""
    registered = await api.ok(
        "/parley.session.v1.SessionService/Register",
        session_pb2.RegisterRequest(email=email, password=PASSWORD, display_name=display_name),
        session_pb2.RegisterResponse,
    )
    return registered.user.name


def publish_usage(stack: LocalStack, usages: list[Usage]) -> None:
    """Usage events on the stack's usage topic, as the router's outbox writes them; the
    stack's ledger bills them."""
    running = stack.stack.table.running("pulsar")
    assert running is not None
    client = pulsar.Client(running.endpoints["pulsar"])
    try:
        producer = usage_producer(client)
        publish(producer, [usage.event() for usage in usages])
        producer.close()
    finally:
        client.close()


async def test_an_admin_sees_spend_charts_and_top_users(
    page: Page, platform: LocalStack, api: Edge, mailbox: Path, screenshots: Screenshots
) -> None:
    admin = await sign_up(page, display_name="Grace Hopper")
    said = "How much did this cost?"
    await start_chat(page, said)
    await finished(page, answers(page).last, echo(said))
    await verify_email(page, mailbox, admin, api)
    await grant_admin(platform, admin.email)
    token = (await api.sign_in(admin.email, admin.password)).credentials.access_token

    async def top_spenders() -> list[ledger_pb2.SpendRow]:
        """The 30 days' top users, as the page shows them."""
        report = await api.ok(
            "/parley.ledger.v1.LedgerService/GetSpendReport",
            ledger_pb2.GetSpendReportRequest(dimension=ledger_pb2.SPEND_DIMENSION_USER, page_size=10),
            ledger_pb2.GetSpendReportResponse,
            token=token,
        )
        return list(report.rows)

    # Two more people spent money over the last three days, on two models; the heavy one
    # one dollar more than anybody before (a reused stack keeps earlier runs' users).
    spent = await top_spenders()
    most = spent[0].cost.micros if spent else 0
    tag = admin.email.split("@")[0]
    heavy = await register(api, f"{tag}-heavy@parley.test", "Heavy User")
    light = await register(api, f"{tag}-light@parley.test", "Light User")
    now = datetime.now(UTC) - timedelta(minutes=5)

    def usage(user: str, model: str, input_tokens: int, days_ago: int) -> Usage:
        return Usage(user.removeprefix("users/"), model, input_tokens, 1_000, now - timedelta(days=days_ago))

    usages = [
        usage(heavy, "parley-scripted", most + 1_000_000, 0),
        usage(heavy, "smollm2", 4_000_000, 1),
        usage(light, "parley-scripted", 200_000, 1),
        usage(light, "smollm2", 1_000_000, 2),
        usage(light, "parley-scripted", 100_000, 2),
    ]
    await asyncio.to_thread(publish_usage, platform, usages)
    await eventually(top_spenders, lambda rows: bool(rows) and rows[0].key == heavy, timeout_s=60)

    await page.goto("/admin")
    await expect(page.get_by_role("heading", name="Admin", exact=True)).to_be_visible()
    # The overview reads a day of the ledger: seconds on a loaded machine.
    top = page.get_by_role("table", name="Top users")
    await expect(top).to_be_visible(timeout=ADMIN_LOAD_MS)
    await expect(page.get_by_role("link", name="Admin", exact=True)).to_be_visible()
    for section in ("Users", "Budgets", "System health"):
        await expect(page.get_by_role("heading", name=section, exact=True)).to_be_visible()
    for chart in CHARTS:
        await expect(page.locator(f'canvas[aria-label="{chart}"]')).to_be_visible(timeout=ADMIN_LOAD_MS)
        await page.wait_for_function(DRAWN, arg=chart, timeout=ADMIN_LOAD_MS)
    heavy_id = heavy.removeprefix("users/")
    await expect(top).to_contain_text(re.compile(rf"Heavy User|{tag}-heavy@parley\.test|{heavy_id}"))
    await expect(page.get_by_text("Admins only")).to_have_count(0)
    await screenshots.save(page, "admin")


async def test_a_user_who_is_not_an_admin_sees_neither_the_page_nor_the_numbers(
    browsing: Browsing, api: Edge, public_url: str
) -> None:
    page = await browsing.new_page()
    person = await sign_up(page, display_name="Not An Admin")
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    await expect(page.get_by_role("link", name="Admin", exact=True)).to_have_count(0)

    await page.goto("/admin")
    await expect(page.get_by_text("Admins only")).to_be_visible()
    await expect(page.locator("canvas")).to_have_count(0)
    await expect(page.get_by_role("table", name="Top users")).to_have_count(0)

    # The API refuses as well: the page hides nothing the server would hand out.
    token = (await api.sign_in(person.email, person.password)).credentials.access_token
    async with grpc.aio.insecure_channel(public_url.removeprefix("http://")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ledger_stub(channel).GetAdminOverview(
                ledger_pb2.GetAdminOverviewRequest(),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=10,
            )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

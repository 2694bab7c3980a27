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

    # Two more people spent money over the last three days, on two models.
    tag = admin.email.split("@")[0]
    heavy = await register(api, f"{tag}-heavy@parley.test", "Heavy User")
    light = await register(api, f"{tag}-light@parley.test", "Light User")
    now = datetime.now(UTC) - timedelta(minutes=5)
    usages = [
        Usage(user.removeprefix("users/"), model, tokens, tokens // 2, now - timedelta(days=days))
        for user, scale in ((heavy, 40), (light, 5))
        for days in (0, 1, 2)
        for model, tokens in (("parley-scripted", scale * 10_000 * (days + 1)), ("smollm2", scale * 30_000))
    ]
    await asyncio.to_thread(publish_usage, platform, usages)

    await verify_email(page, mailbox, admin)
    await grant_admin(platform, admin.email)
    token = (await api.sign_in(admin.email, admin.password)).credentials.access_token

    async def overview() -> ledger_pb2.GetAdminOverviewResponse:
        return await api.ok(
            "/parley.ledger.v1.LedgerService/GetAdminOverview",
            ledger_pb2.GetAdminOverviewRequest(),
            ledger_pb2.GetAdminOverviewResponse,
            token=token,
        )

    await eventually(overview, lambda o: heavy in {row.key for row in o.top_users}, timeout_s=60, every_s=0.5)

    await page.goto("/admin")
    await expect(page.get_by_role("heading", name="Admin", exact=True)).to_be_visible()
    await expect(page.get_by_role("link", name="Admin", exact=True)).to_be_visible()
    for section in ("Users", "Budgets", "System health"):
        await expect(page.get_by_role("heading", name=section, exact=True)).to_be_visible()
    for chart in CHARTS:
        await expect(page.locator(f'canvas[aria-label="{chart}"]')).to_be_visible()
        await page.wait_for_function(DRAWN, arg=chart, timeout=15_000)
    top = page.get_by_role("table", name="Top users")
    await expect(top).to_be_visible()
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

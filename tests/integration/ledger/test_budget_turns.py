"""Budgets end to end: real turns through svc_router against a hard budget the ledger keeps.

50 turns at once against a hard limit never spend past it: the router reserves each turn's
largest cost in one atomic step, the ledger settles each priced turn (its reservation
released, its cost spent, together), and afterwards nothing stays reserved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.rpc import error_details_pb2

from parley.common.v1 import common_pb2
from parley.ledger.v1 import ledger_pb2 as lpb
from parley_core.errors import details_of
from parley_core.stubs import chat_stub

# The router's fixtures (with history's and session's behind them).
from tests.integration.history.conftest import history_app  # noqa: F401
from tests.integration.history.helpers import Person
from tests.integration.ledger.conftest import admin_md
from tests.integration.ledger.helpers import eventually
from tests.integration.router.conftest import router_servers, start_router, write_catalog  # noqa: F401
from tests.integration.router.helpers import send

if TYPE_CHECKING:
    from parley.ledger.v1.ledger_pb2_grpc import LedgerServiceAsyncStub

#: parley-scripted in a small window: a turn's largest cost is close to what it costs.
CATALOG = """
schema_version = 2
default_model = "parley-scripted"

[[models]]
name = "parley-scripted"
display_name = "Parley Scripted (tests)"
context_window = 64
max_output_tokens = 16
capabilities = ["chat", "streaming", "cancel"]

[[models.backends]]
kind = "triton"
model = "parley-scripted"

[models.tokenizer]
kind = "words"
template = "chatml"

[models.price]
currency = "USD"
input_per_million_tokens = 1_000_000
output_per_million_tokens = 2_000_000
"""

#: The largest cost of one turn: 48 prompt tokens at 1 and 16 answer tokens at 2 micro-USD.
LARGEST = 48 * 1 + 16 * 2
HARD_LIMIT = 1_000

pytestmark = pytest.mark.integration


def _settled(spent: int) -> Callable[[lpb.GetBudgetResponse], bool]:
    return lambda b: b.reserved.micros == 0 and b.spent.micros == spent


async def test_concurrent_turns_never_spend_past_a_hard_budget(
    tmp_path: Path,
    start_router: Any,  # noqa: F811
    ledger: LedgerServiceAsyncStub,
    alice: Person,
    admin_token: str,
) -> None:
    router = await start_router(catalog_path=write_catalog(tmp_path, CATALOG))
    await ledger.SetBudget(
        lpb.SetBudgetRequest(
            budget=lpb.Budget(
                name=f"{alice.name}/budget",
                hard_limit=common_pb2.Money(currency_code="USD", micros=HARD_LIMIT),
            )
        ),
        metadata=admin_md(admin_token),
    )

    async def budget() -> lpb.GetBudgetResponse:
        return await ledger.GetBudget(lpb.GetBudgetRequest(name="users/me/budget"), metadata=alice.md)

    admitted_total = 0
    costs: list[int] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as channel:
        chat = chat_stub(channel)
        for wave in range(12):
            before = await budget()
            assert before.reserved.micros == 0
            results = await asyncio.gather(
                *(send(chat, alice, f"turn {wave}.{i} [scripted reply_tokens=16]") for i in range(50)),
                return_exceptions=True,
            )
            admitted = [r for r in results if not isinstance(r, BaseException)]
            refused = [r for r in results if isinstance(r, BaseException)]
            for error in refused:
                assert isinstance(error, grpc.aio.AioRpcError), error
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
                infos = [d for d in details_of(error) if isinstance(d, error_details_pb2.ErrorInfo)]
                assert infos[0].reason == "BUDGET_EXHAUSTED"
            # One atomic check-and-hold per turn: never more turns than the room left allows.
            assert len(admitted) <= (HARD_LIMIT - before.spent.micros) // LARGEST
            costs += [t.completed.cost_estimate.micros for t in admitted]
            admitted_total += len(admitted)
            spent = sum(costs)
            after = await eventually(budget, _settled(spent))
            assert after.spent.micros <= HARD_LIMIT
            if not admitted:
                break

    assert admitted_total > 0
    assert not admitted, "the last wave found the budget used up"
    final = await budget()
    assert final.spent.micros == sum(costs) <= HARD_LIMIT
    assert final.spent.micros + LARGEST > HARD_LIMIT, "the budget was used up to less than one turn"
    assert final.reserved.micros == 0
    assert final.state in (lpb.BUDGET_STATE_OK, lpb.BUDGET_STATE_EXHAUSTED)
    items = await ledger.ListLineItems(
        lpb.ListLineItemsRequest(parent="users/me", page_size=1000), metadata=alice.md
    )
    assert len(items.line_items) == admitted_total
    assert sum(i.cost.micros for i in items.line_items) == final.spent.micros

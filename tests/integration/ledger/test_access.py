"""Who may read and change what: a user's own usage only, admins for the admin methods,
and bad input refused with a precise status before anything is read or written."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import grpc
import pulsar
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2

from parley.common.v1 import common_pb2
from parley.ledger.v1 import ledger_pb2 as pb
from parley_core.errors import details_of
from tests.integration.history.helpers import Person
from tests.integration.ledger.conftest import admin_md
from tests.integration.ledger.helpers import Usage, eventually, publish

if TYPE_CHECKING:
    from parley.ledger.v1.ledger_pb2_grpc import LedgerServiceAsyncStub


def usd(micros: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code="USD", micros=micros)


async def _refused(call: object, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    assert raised.value.code() == code, raised.value.details()
    return raised.value


def _violations(error: grpc.aio.AioRpcError) -> list[str]:
    found = [d for d in details_of(error) if isinstance(d, error_details_pb2.BadRequest)]
    return [v.field for d in found for v in d.field_violations]


def _reason(error: grpc.aio.AioRpcError) -> str:
    infos = [d for d in details_of(error) if isinstance(d, error_details_pb2.ErrorInfo)]
    return infos[0].reason if infos else ""


async def test_a_user_sees_only_their_own_usage_and_line_items(
    ledger: LedgerServiceAsyncStub, producer: pulsar.Producer, alice: Person, bob: Person
) -> None:
    publish(producer, [Usage(alice.user_id, "smollm2", 100, 10, datetime.now(UTC)).event()])
    stub = ledger

    async def alices() -> int:
        reply = await stub.ListLineItems(pb.ListLineItemsRequest(parent="users/me"), metadata=alice.md)
        return len(reply.line_items)

    await eventually(alices, lambda n: n == 1)

    for call in (
        stub.GetUsage(pb.GetUsageRequest(name=alice.name), metadata=bob.md),
        stub.ListLineItems(pb.ListLineItemsRequest(parent=alice.name), metadata=bob.md),
        stub.GetBudget(pb.GetBudgetRequest(name=f"{alice.name}/budget"), metadata=bob.md),
        stub.GetBudget(pb.GetBudgetRequest(name=f"{alice.name}/apiKeys/k1/budget"), metadata=bob.md),
        stub.GetBudget(pb.GetBudgetRequest(name="tiers/free/budget"), metadata=bob.md),
    ):
        assert _reason(await _refused(call, grpc.StatusCode.PERMISSION_DENIED)) == "NOT_OWNER"
    bobs = await stub.ListLineItems(pb.ListLineItemsRequest(parent="users/me"), metadata=bob.md)
    assert list(bobs.line_items) == []
    bob_usage = await stub.GetUsage(pb.GetUsageRequest(name="users/me"), metadata=bob.md)
    assert bob_usage.cost.micros == 0
    own = await stub.GetBudget(pb.GetBudgetRequest(name="users/me/budget"), metadata=bob.md)
    assert own.budget.name == f"{bob.name}/budget"
    assert own.state == pb.BUDGET_STATE_OK


async def test_admin_methods_refuse_a_user_and_serve_an_admin(
    ledger: LedgerServiceAsyncStub, alice: Person, admin_token: str
) -> None:
    stub = ledger
    budget = pb.Budget(name=f"{alice.name}/budget", hard_limit=usd(1))
    for call in (
        stub.GetSpendReport(pb.GetSpendReportRequest(), metadata=alice.md),
        stub.SetBudget(pb.SetBudgetRequest(budget=budget), metadata=alice.md),
        stub.GetAdminOverview(pb.GetAdminOverviewRequest(), metadata=alice.md),
    ):
        assert _reason(await _refused(call, grpc.StatusCode.PERMISSION_DENIED)) == "ADMIN_ONLY"
    got = await stub.GetBudget(pb.GetBudgetRequest(name=f"{alice.name}/budget"), metadata=alice.md)
    assert not got.budget.HasField("hard_limit"), "the refused SetBudget changed nothing"

    admin = admin_md(admin_token)
    await stub.GetSpendReport(pb.GetSpendReportRequest(), metadata=admin)
    await stub.GetAdminOverview(pb.GetAdminOverviewRequest(), metadata=admin)
    await stub.GetUsage(pb.GetUsageRequest(name=alice.name), metadata=admin)
    await stub.GetBudget(pb.GetBudgetRequest(name="tiers/free/budget"), metadata=admin)


async def test_calls_without_a_valid_token_are_unauthenticated(
    ledger: LedgerServiceAsyncStub, alice: Person
) -> None:
    stub = ledger
    forged = alice.token[:-4] + ("AAAA" if not alice.token.endswith("AAAA") else "BBBB")
    for metadata in ((), (("authorization", f"Bearer {forged}"),), (("authorization", "Bearer x.y.z"),)):
        await _refused(
            stub.GetUsage(pb.GetUsageRequest(name="users/me"), metadata=metadata),
            grpc.StatusCode.UNAUTHENTICATED,
        )


def _at(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.GetUsageRequest(name="users/a/b"), "name"),
        (
            pb.GetUsageRequest(
                name="users/me", start_time=_at(datetime(2026, 5, 2)), end_time=_at(datetime(2026, 5, 1))
            ),
            "start_time",
        ),
        (
            pb.GetUsageRequest(
                name="users/me", start_time=_at(datetime(2020, 1, 1)), end_time=_at(datetime(2026, 1, 1))
            ),
            "start_time",
        ),
        (pb.ListLineItemsRequest(parent="users/me", page_size=-1), "page_size"),
        (pb.ListLineItemsRequest(parent="users/me", page_token="garbage!"), "page_token"),
        (pb.ListLineItemsRequest(parent="conversations/x"), "parent"),
        (pb.GetBudgetRequest(name="users/me"), "name"),
        (pb.GetBudgetRequest(name="tiers/Free!/budget"), "name"),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    ledger: LedgerServiceAsyncStub, alice: Person, request_: object, field: str
) -> None:
    method = {
        pb.GetUsageRequest: "GetUsage",
        pb.ListLineItemsRequest: "ListLineItems",
        pb.GetBudgetRequest: "GetBudget",
    }[type(request_)]
    error = await _refused(
        getattr(ledger, method)(request_, metadata=alice.md), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert _violations(error) == [field]


@pytest.mark.parametrize(
    ("budget", "field"),
    [
        (
            pb.Budget(name="users/me/budget", hard_limit=common_pb2.Money(currency_code="EUR", micros=1)),
            "budget.hard_limit.currency_code",
        ),
        (pb.Budget(name="users/me/budget", soft_limit=usd(-1)), "budget.soft_limit.micros"),
        (pb.Budget(name="users/me/budget", soft_limit=usd(5), hard_limit=usd(4)), "budget.soft_limit"),
        (pb.Budget(name="users/x/conversations/y/budget", hard_limit=usd(4)), "budget.name"),
    ],
)
async def test_a_budget_that_cannot_be_is_refused_and_nothing_changes(
    ledger: LedgerServiceAsyncStub, admin_token: str, budget: pb.Budget, field: str
) -> None:
    admin = admin_md(admin_token)
    error = await _refused(
        ledger.SetBudget(pb.SetBudgetRequest(budget=budget), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert _violations(error) == [field]
    if budget.name == "users/me/budget":
        got = await ledger.GetBudget(pb.GetBudgetRequest(name="users/me/budget"), metadata=admin)
        assert not got.budget.HasField("soft_limit")
        assert not got.budget.HasField("hard_limit")


async def test_set_budget_with_a_stale_etag_is_aborted(
    ledger: LedgerServiceAsyncStub, admin_token: str, alice: Person
) -> None:
    admin = admin_md(admin_token)
    stub = ledger
    name = f"{alice.name}/budget"
    first = await stub.SetBudget(
        pb.SetBudgetRequest(budget=pb.Budget(name=name, hard_limit=usd(100))), metadata=admin
    )
    second = await stub.SetBudget(
        pb.SetBudgetRequest(budget=pb.Budget(name=name, hard_limit=usd(200), etag=first.budget.etag)),
        metadata=admin,
    )
    assert second.budget.etag != first.budget.etag

    error = await _refused(
        stub.SetBudget(
            pb.SetBudgetRequest(budget=pb.Budget(name=name, hard_limit=usd(300), etag=first.budget.etag)),
            metadata=admin,
        ),
        grpc.StatusCode.ABORTED,
    )
    assert _reason(error) == "ETAG_MISMATCH"
    got = await stub.GetBudget(pb.GetBudgetRequest(name="users/me/budget"), metadata=alice.md)
    assert got.budget.hard_limit.micros == 200
    assert got.budget.etag == second.budget.etag
    removed = await stub.SetBudget(pb.SetBudgetRequest(budget=pb.Budget(name=name)), metadata=admin)
    assert not removed.budget.HasField("hard_limit")

"""Versioned prices: a change applies from its effective time, never backwards, and a line
item keeps the price version it was billed at."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pulsar
import pytest

from parley.ledger.v1 import ledger_pb2 as pb
from parley_core.stubs import ledger_stub
from svc_ledger.pricing import PriceHistoryError
from tests.integration.history.helpers import Person
from tests.integration.ledger.conftest import write_catalog
from tests.integration.ledger.helpers import Usage, cost, eventually, publish

CATALOG = """
schema_version = 2
default_model = "priced"

[[models]]
name = "priced"
display_name = "Priced"
context_window = 100
max_output_tokens = 50

[[models.backends]]
kind = "triton"
model = "parley-scripted"

[models.price]
currency = "USD"
input_per_million_tokens = 1_000_000
output_per_million_tokens = 2_000_000
{changes}
"""

CHANGE = """
[[models.price_changes]]
version = "{version}"
effective_time = {when}
currency = "USD"
input_per_million_tokens = {input}
output_per_million_tokens = {output}
"""


def _catalog(tmp_path: Path, *changes: tuple[str, datetime, int, int]) -> Path:
    body = CATALOG.format(
        changes="".join(
            CHANGE.format(version=v, when=w.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), input=i, output=o)
            for v, w, i, o in changes
        )
    )
    return write_catalog(tmp_path, body)


async def test_a_price_change_mid_month_keeps_earlier_items_at_the_old_price(
    tmp_path: Path, start_ledger: Any, producer: pulsar.Producer, alice: Person
) -> None:
    # The change takes effect in a day: new to the ledger, so not backwards. Events are
    # stamped on either side of it (their own time decides, not when they arrive).
    change = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    keyspace = f"ledger_prices_{secrets.token_hex(4)}"
    app = await start_ledger(
        catalog_path=_catalog(tmp_path, ("raise", change, 3_000_000, 5_000_000)),
        keyspace=keyspace,
        subscription=f"ledger-{keyspace}",
    )
    before = Usage(alice.user_id, "priced", 7, 3, change - timedelta(milliseconds=1))
    at = Usage(alice.user_id, "priced", 7, 3, change)
    after = Usage(alice.user_id, "priced", 7, 3, change + timedelta(days=2))
    events = [before.event(), at.event(), after.event()]
    publish(producer, events)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = ledger_stub(channel)

        async def items() -> list[pb.LineItem]:
            reply = await stub.ListLineItems(pb.ListLineItemsRequest(parent="users/me"), metadata=alice.md)
            return list(reply.line_items)

        found = await eventually(items, lambda got: len(got) == 3)

    by_id = {i.name.rsplit("/", 1)[-1]: i for i in found}
    old, new = cost(7, 3, 1_000_000, 2_000_000), cost(7, 3, 3_000_000, 5_000_000)
    assert (by_id[events[0].event_id].price_version, by_id[events[0].event_id].cost.micros) == ("1", old)
    assert (by_id[events[1].event_id].price_version, by_id[events[1].event_id].cost.micros) == ("raise", new)
    assert (by_id[events[2].event_id].price_version, by_id[events[2].event_id].cost.micros) == ("raise", new)


async def test_a_price_cannot_apply_backwards_or_change_after_it_was_used(
    tmp_path: Path, start_ledger: Any
) -> None:
    keyspace = f"ledger_prices_{secrets.token_hex(4)}"
    later = datetime.now(UTC) + timedelta(days=3)
    await start_ledger(
        catalog_path=_catalog(tmp_path, ("v2", later, 2, 2)),
        keyspace=keyspace,
        subscription=f"ledger-{keyspace}",
    )
    past = datetime.now(UTC) - timedelta(hours=1)

    cases = [
        # A new version that would apply from an hour ago.
        ((("v3", past, 9, 9), ("v2", later, 2, 2)), "never backwards"),
        # A version that was used, changed.
        ((("v2", later, 3, 2),), "add a new version instead"),
        # A version that was recorded, dropped.
        ((), "no longer in the catalog"),
    ]
    # Each catalog is valid on its own: what the ledger already used refuses it.
    for changes, problem in cases:
        directory = tmp_path / secrets.token_hex(3)
        directory.mkdir()
        path = _catalog(directory, *changes)
        with pytest.raises(PriceHistoryError) as raised:
            await start_ledger(catalog_path=path, keyspace=keyspace, subscription=f"ledger-{keyspace}")
        assert any(problem in p for p in raised.value.problems), raised.value.problems

    # The same catalog again, and one that adds a later version, start.
    again = tmp_path / "again"
    again.mkdir()
    await start_ledger(
        catalog_path=_catalog(again, ("v2", later, 2, 2), ("v3", later + timedelta(days=1), 4, 4)),
        keyspace=keyspace,
        subscription=f"ledger-{keyspace}",
    )

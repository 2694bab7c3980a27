"""Usage events priced into line items and totals: exact sums, estimates, poison, paging."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pulsar
import pytest

from parley.events.v1 import events_pb2
from parley.ledger.v1 import ledger_pb2 as pb
from parley_core.catalog import load_catalog
from parley_core.events import topic_url
from svc_ledger.app import LedgerApp
from svc_ledger.consumer import DEAD_LETTER
from tests.integration.history.helpers import Person
from tests.integration.ledger.helpers import Usage, cost, eventually, publish

if TYPE_CHECKING:
    from parley.ledger.v1.ledger_pb2_grpc import LedgerServiceAsyncStub

CATALOG = load_catalog(Path(__file__).resolve().parents[3] / "model_repo" / "catalog.toml")


def expected_cost(usage: Usage) -> int:
    price = CATALOG.model(usage.model).price
    return cost(
        usage.input_tokens,
        usage.output_tokens,
        price.input_per_million_tokens,
        price.output_per_million_tokens,
    )


async def items_of(ledger: LedgerServiceAsyncStub, person: Person, want: int) -> list[pb.LineItem]:
    stub = ledger

    async def listed() -> list[pb.LineItem]:
        found: list[pb.LineItem] = []
        token = ""
        while True:
            page = await stub.ListLineItems(
                pb.ListLineItemsRequest(parent="users/me", page_size=7, page_token=token), metadata=person.md
            )
            found += page.line_items
            token = page.next_page_token
            if not token:
                return found

    return await eventually(listed, lambda found: len(found) >= want)


async def test_events_become_line_items_and_the_totals_are_their_exact_sum(
    ledger: LedgerServiceAsyncStub, producer: pulsar.Producer, alice: Person
) -> None:
    now = datetime.now(UTC) - timedelta(minutes=5)
    usages = [
        Usage(alice.user_id, model, 17 * i + 1, 5 * i + 3, now + timedelta(seconds=i), api_key=key)
        for i, (model, key) in enumerate(
            [("smollm2", ""), ("parley-tiny", "k1"), ("parley-scripted", ""), ("smollm2", "k1")] * 5
        )
    ]
    events = [u.event() for u in usages]
    publish(producer, events)

    items = await items_of(ledger, alice, len(events))

    assert sorted(i.name for i in items) == sorted(
        f"users/{alice.user_id}/lineItems/{e.event_id}" for e in events
    )
    assert [i.usage_time.ToDatetime() for i in items] == sorted(
        (i.usage_time.ToDatetime() for i in items), reverse=True
    ), "newest first"
    by_id = {i.name.rsplit("/", 1)[-1]: i for i in items}
    for usage, event in zip(usages, events, strict=True):
        item = by_id[event.event_id]
        assert item.cost.micros == expected_cost(usage)
        assert item.cost.currency_code == "USD"
        assert item.price_version == "1"
        assert item.usage_source == pb.USAGE_SOURCE_MODEL
        assert item.model == f"models/{usage.model}"
        assert item.api_key == (f"users/{alice.user_id}/apiKeys/k1" if usage.api_key else "")
    usage_reply = await ledger.GetUsage(pb.GetUsageRequest(name="users/me"), metadata=alice.md)
    assert usage_reply.cost.micros == sum(expected_cost(u) for u in usages)
    assert usage_reply.usage.input_tokens == sum(u.input_tokens for u in usages)
    assert usage_reply.usage.output_tokens == sum(u.output_tokens for u in usages)
    per_model = {m.model: (m.turns, m.cost.micros) for m in usage_reply.models}
    for model in ("smollm2", "parley-tiny", "parley-scripted"):
        mine = [u for u in usages if u.model == model]
        assert per_model[f"models/{model}"] == (len(mine), sum(expected_cost(u) for u in mine))
    assert [m.cost.micros for m in usage_reply.models] == sorted(
        (m.cost.micros for m in usage_reply.models), reverse=True
    )


async def test_a_redelivered_or_replayed_event_is_billed_once(
    ledger: LedgerServiceAsyncStub, producer: pulsar.Producer, alice: Person
) -> None:
    usage = Usage(alice.user_id, "parley-scripted", 10, 20, datetime.now(UTC))
    event = usage.event()
    publish(producer, [event, event])
    await items_of(ledger, alice, 1)
    publish(producer, [event])
    marker = Usage(alice.user_id, "parley-scripted", 1, 1, datetime.now(UTC)).event()
    publish(producer, [marker])  # after the replay, on the same key: once it is in, so is the replay

    items = await items_of(ledger, alice, 2)

    assert len(items) == 2
    reply = await ledger.GetUsage(pb.GetUsageRequest(name="users/me"), metadata=alice.md)
    assert reply.cost.micros == expected_cost(usage) + cost(1, 1, 1_000_000, 2_000_000)
    assert reply.models[0].turns == 2


async def test_an_event_without_usage_is_billed_by_estimate_and_flagged(
    ledger: LedgerServiceAsyncStub, ledger_app: LedgerApp, producer: pulsar.Producer, alice: Person
) -> None:
    estimated_before = _sample(ledger_app, "parley_ledger_estimated_line_items_total")
    usage = Usage(
        alice.user_id, "smollm2", 321, 45, datetime.now(UTC), finish_reason="cancelled", estimated=True
    )
    publish(producer, [usage.event()])

    (item,) = await items_of(ledger, alice, 1)

    assert item.usage_source == pb.USAGE_SOURCE_ESTIMATED
    assert (item.usage.input_tokens, item.usage.output_tokens) == (321, 45)
    assert item.cost.micros == expected_cost(usage) > 0
    assert item.finish_reason == "cancelled"
    # Counted once its batch is settled, a moment after the item can be read.
    await _counted(ledger_app, estimated_before + 1, "parley_ledger_estimated_line_items_total")


async def test_poison_events_go_to_the_dead_letter_topic_while_the_rest_flow(
    ledger: LedgerServiceAsyncStub,
    ledger_app: LedgerApp,
    producer: pulsar.Producer,
    pulsar_client: pulsar.Client,
    alice: Person,
) -> None:
    dead = pulsar_client.subscribe(
        topic_url(DEAD_LETTER), f"test-{uuid.uuid4().hex[:8]}", initial_position=pulsar.InitialPosition.Latest
    )
    good = [Usage(alice.user_id, "smollm2", 10 + i, 10, datetime.now(UTC)).event() for i in range(3)]
    unknown = Usage(alice.user_id, "no-such-model", 1, 1, datetime.now(UTC)).event()
    negative = Usage(alice.user_id, "smollm2", -5, 1, datetime.now(UTC)).event()
    no_usage = Usage(alice.user_id, "smollm2", 1, 1, datetime.now(UTC)).event()
    no_usage.ClearField("usage")
    before = {r: _sample(ledger_app, "parley_ledger_dead_letters_total", reason=r) for r in _REASONS}
    publish(producer, [good[0], unknown, negative, good[1], no_usage, good[2]])
    producer.send(b"\xff\xfe not a protobuf", partition_key=alice.user_id)

    items = await items_of(ledger, alice, 3)
    # Other tests' poison and other ledgers' letters may come too, and a letter may come
    # twice (dead-lettering is at least once: a batch retried after its letters were sent
    # sends them again): collect this ledger's letters for alice until every reason is in.
    by_reason: dict[str, pulsar.Message] = {}
    while set(by_reason) != set(_REASONS):
        letter = await asyncio.to_thread(dead.receive, 20_000)
        mine = letter.properties().get("subscription") == ledger_app.settings.subscription
        if mine and letter.partition_key() == alice.user_id:
            by_reason[letter.properties()["reason"]] = letter
    dead.close()

    assert sorted(i.name.rsplit("/", 1)[-1] for i in items) == sorted(e.event_id for e in good)
    assert events_pb2.TurnCompleted.FromString(by_reason["unknown_model"].data()).event_id == unknown.event_id
    assert by_reason["undecodable"].data() == b"\xff\xfe not a protobuf"
    for reason in _REASONS:
        await _counted(ledger_app, before[reason] + 1, "parley_ledger_dead_letters_total", reason=reason)


_REASONS = ("undecodable", "unknown_model", "negative_counts", "no_usage")


async def _counted(app: LedgerApp, value: float, name: str, **labels: str) -> None:
    """The metric reaches `value` (it is counted just after what the test can observe; other
    tests' events may add to it meanwhile, so at least `value`)."""

    async def sample() -> float:
        return _sample(app, name, **labels)

    await eventually(sample, lambda found: found >= value, timeout_s=10)


def _sample(app: LedgerApp, name: str, **labels: str) -> float:
    value = app.data.registry.get_sample_value(name, labels)
    return value or 0.0


@pytest.mark.parametrize("page_size", [1, 4, 100])
async def test_line_items_page_across_months_without_gaps_or_repeats(
    ledger: LedgerServiceAsyncStub, producer: pulsar.Producer, people: object, page_size: int
) -> None:
    person: Person = await people()  # type: ignore[operator]
    times = [
        datetime(2026, 9, 30, 23, 59, 59, tzinfo=UTC) + timedelta(hours=h) for h in (-3, 0, 0, 0, 1, 24 * 40)
    ]
    events = [Usage(person.user_id, "smollm2", 1, 1, t).event() for t in times]
    publish(producer, events)
    await items_of(ledger, person, len(events))

    seen: list[str] = []
    token = ""
    while True:
        page = await ledger.ListLineItems(
            pb.ListLineItemsRequest(parent=person.name, page_size=page_size, page_token=token),
            metadata=person.md,
        )
        assert len(page.line_items) <= page_size
        seen += [i.name for i in page.line_items]
        token = page.next_page_token
        if not token:
            break

    assert sorted(seen) == sorted(f"users/{person.user_id}/lineItems/{e.event_id}" for e in events)
    assert len(seen) == len(set(seen))
    ranged = await ledger.ListLineItems(
        pb.ListLineItemsRequest(
            parent="users/me",
            start_time=events[1].event_time,
            end_time=events[4].event_time,
        ),
        metadata=person.md,
    )
    assert sorted(i.name.rsplit("/", 1)[-1] for i in ranged.line_items) == sorted(
        e.event_id for e in events[1:4]
    )

"""The dashboards and alert rules of k8s/monitoring/ read only metrics that Parley's
processes and Envoy really export, with the labels they really carry.

After one chat turn through Envoy (so that series made on first use exist), every metric
name in every dashboard query and alert rule must be exported by a service's metrics port,
the search indexer's, or Envoy's /stats/prometheus, and every label a selector matches on
must be on that metric. The metrics added for these dashboards carry the values the turn
implies. The rule file's structure is checked in Python (no promtool in the stack).
"""

from __future__ import annotations

import asyncio
import json
import re

import grpc
import pytest

from parley.chat.v1 import chat_pb2
from parley_core.stubs import chat_stub
from parley_stack.config import REPO_ROOT
from parley_stack.testing import LocalStack
from tests.integration.monitoring.helpers import (
    Person,
    eventually,
    exposition,
    person_at_edge,
    sample,
    scrape,
    turn_at_edge,
)
from tests.integration.monitoring.promql import (
    SYNTHETIC,
    TARGET_LABELS,
    Exposition,
    metric_names,
    read_rules,
    selectors,
)
from tests.integration.router.helpers import turn_input

pytestmark = pytest.mark.integration

MONITORING = REPO_ROOT / "k8s" / "monitoring"
DASHBOARDS = sorted((MONITORING / "dashboards").glob("*.json"))
RULES = MONITORING / "alerts.yaml"
SCRIPTED = "[scripted ttft_ms=10 tokens_per_second=200 reply_tokens=8]"


def _queries() -> list[tuple[str, str]]:
    """(where, expression) of every dashboard target and every rule."""
    found = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{path.name}: {panel['title']}", target["expr"]))
    for rule in read_rules(RULES.read_text()):
        found.append((f"alerts.yaml: {rule.name}", rule.expr))
    return found


def _recorded() -> set[str]:
    return {rule.name for rule in read_rules(RULES.read_text()) if rule.kind == "record"}


@pytest.fixture(scope="module")
def stack(local_stack: LocalStack) -> LocalStack:
    local_stack.ensure("envoy")
    return local_stack


@pytest.fixture(scope="module")
def edge(stack: LocalStack) -> str:
    host, port = stack.endpoint("envoy", "public")
    return f"{host}:{port}"


@pytest.fixture(scope="module")
async def person(stack: LocalStack, edge: str) -> Person:
    return await person_at_edge(stack, edge)


@pytest.fixture(scope="module")
async def after_a_turn(stack: LocalStack, edge: str, person: Person) -> Exposition:
    """The stack's metrics once one turn has gone through Envoy, been priced and indexed."""
    before = scrape(stack, "svc_ledger")
    transcript = await turn_at_edge(edge, person, f"count the lighthouses {SCRIPTED}")
    assert transcript.completed.usage.output_tokens == 8

    def priced() -> bool:
        text = scrape(stack, "svc_ledger")
        return sample(text, "parley_ledger_events_total", outcome="priced") > sample(
            before, "parley_ledger_events_total", outcome="priced"
        )

    def indexed() -> bool:
        return sample(scrape(stack, "svc_history-indexer"), "parley_search_indexer_batch_seconds_count") > 0

    await eventually(priced, "the turn's usage event to be priced")
    await eventually(indexed, "the indexer to index a batch", timeout_s=60)
    return exposition(stack)


def test_every_dashboard_is_a_grafana_dashboard_on_the_datasource_variable() -> None:
    assert [p.name.removeprefix("parley-") for p in DASHBOARDS] == [
        "chat.json", "data.json", "identity.json", "services.json", "spend.json",
    ]  # fmt: skip
    uids = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        uids.append(board["uid"])
        assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]
        panels = [p for p in board["panels"] if p["type"] != "row"]
        assert panels, path.name
        for panel in panels:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]
            assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
    assert len(uids) == len(set(uids))


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section() -> None:
    runbook = (REPO_ROOT / "docs" / "ops" / "runbook.md").read_text()
    anchors = {
        "#" + re.sub(r"[^\w -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in runbook.splitlines()
        if line.startswith(("## ", "### "))
    }
    alerts = [rule for rule in read_rules(RULES.read_text()) if rule.kind == "alert"]
    assert len(alerts) >= 15
    for rule in alerts:
        labels, annotations = rule.fields["labels"], rule.fields["annotations"]
        assert isinstance(labels, dict), rule.name
        assert isinstance(annotations, dict), rule.name
        assert labels["severity"] in ("page", "ticket"), rule.name
        assert annotations["summary"], rule.name
        assert annotations["runbook"].partition("#")[0] == "docs/ops/runbook.md", rule.name
        assert "#" + annotations["runbook"].partition("#")[2] in anchors, rule.name


def test_every_rule_is_well_formed() -> None:
    """What `promtool check rules` would check of the file's structure (promtool itself is not
    part of the stack: its Go build took over 15 minutes on the build machine)."""
    rules = read_rules(RULES.read_text())
    names = [rule.name for rule in rules]
    assert len(names) == len(set(names))
    text = RULES.read_text()
    assert text.count("- alert: ") + text.count("- record: ") == len(rules)
    groups = re.findall(r"^- name: (.+)$", text, flags=re.MULTILINE)
    assert len(groups) == len(set(groups)) == 5
    for rule in rules:
        assert rule.group in groups, rule.name
        assert rule.expr.count("(") == rule.expr.count(")"), rule.name
        if rule.kind == "record":
            assert set(rule.fields) == {"expr"}, rule.name
            assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", rule.name), rule.name
        else:
            assert set(rule.fields) <= {"expr", "for", "labels", "annotations"}, rule.name
            assert re.fullmatch(r"Parley[A-Za-z]+", rule.name), rule.name
            assert re.fullmatch(r"\d+[smh]", str(rule.fields.get("for", "1m"))), rule.name


def test_the_slo_burn_windows_pair_a_long_and_a_short_window() -> None:
    """The burn-rate alerts read recorded ratios over the workbook's window pairs, each long
    window with its short one at the same threshold."""
    rules = {rule.name: rule for rule in read_rules(RULES.read_text())}
    pairs = re.findall(
        r"parley:turn_ttft_slow:ratio_rate(\w+) > \(?([\d.]+(?: \* 0\.01)?)\)? and "
        r"parley:turn_ttft_slow:ratio_rate(\w+) > \(?([\d.]+(?: \* 0\.01)?)\)?",
        rules["ParleyTTFTBudgetBurnFast"].expr + "\n" + rules["ParleyTTFTBudgetBurnSlow"].expr,
    )
    assert [(long, short) for long, _, short, _ in pairs] == [
        ("1h", "5m"),
        ("6h", "30m"),
        ("1d", "2h"),
        ("3d", "6h"),
    ]
    assert all(first == second for _, first, _, second in pairs)
    assert [first for _, first, _, _ in pairs] == ["14.4 * 0.01", "6 * 0.01", "3 * 0.01", "0.01"]


async def test_every_metric_the_dashboards_and_alerts_read_is_exported(after_a_turn: Exposition) -> None:
    recorded = _recorded()
    missing = []
    for where, expr in _queries():
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        for name in names - SYNTHETIC:
            if ":" in name:
                if name not in recorded:
                    missing.append(f"{where}: {name} (no rule records it)")
            elif not after_a_turn.declares(name):
                missing.append(f"{where}: {name}")
    assert missing == []


async def test_every_label_a_selector_matches_on_is_on_its_metric(after_a_turn: Exposition) -> None:
    wrong = []
    for where, expr in _queries():
        for name, labels in selectors(expr):
            if ":" in name:
                continue
            assert after_a_turn.has_samples(name), f"{where}: {name} has no series after a turn"
            unknown = labels - TARGET_LABELS - after_a_turn.labels[name]
            if unknown:
                wrong.append(f"{where}: {name} has no label {sorted(unknown)}")
    assert wrong == []


async def test_the_turn_shows_in_the_new_metrics(stack: LocalStack, after_a_turn: Exposition) -> None:
    router = scrape(stack, "svc_router")
    # Eight tokens, one a piece: seven gaps between them.
    assert sample(router, "parley_turn_inter_token_seconds_count", model="parley-scripted") >= 7
    assert sample(router, "parley_router_active_streams") == 0
    assert sample(router, "parley_router_running_turns") == 0
    ledger = scrape(stack, "svc_ledger")
    assert sample(ledger, "parley_ledger_spend_micros_total", model="parley-scripted") > 0
    assert sample(ledger, "parley_ledger_consumer_lag_events") == 0
    assert sample(ledger, "parley_ledger_consumer_lag_seconds") == 0
    session = scrape(stack, "svc_session")
    age = sample(session, "parley_session_signing_key_age_seconds")
    assert 0 < age < sample(session, "parley_session_signing_key_rotation_seconds")
    for process in ("svc_session", "svc_history", "svc_router", "svc_ledger"):
        text = scrape(stack, process)
        assert sample(text, "parley_cassandra_request_seconds_count", outcome="ok") > 0, process
    for process in ("svc_history", "svc_router"):  # both publish through their outbox
        assert sample(scrape(stack, process), "parley_outbox_publish_seconds_count") > 0, process


async def test_spend_grows_by_the_turns_cost_once(stack: LocalStack, edge: str, person: Person) -> None:
    def spent() -> float:
        return sample(
            scrape(stack, "svc_ledger"), "parley_ledger_spend_micros_total", model="parley-scripted"
        )

    before = spent()
    transcript = await turn_at_edge(edge, person, f"price this one {SCRIPTED}")
    cost = transcript.completed.cost_estimate.micros
    assert cost > 0
    await eventually(lambda: spent() > before, "the ledger to price the turn")
    await asyncio.sleep(1)  # nothing more is added later
    assert spent() - before == cost


async def test_an_open_stream_counts_as_active_until_it_ends(
    stack: LocalStack, edge: str, person: Person
) -> None:
    def active() -> float:
        return sample(scrape(stack, "svc_router"), "parley_router_active_streams")

    async with grpc.aio.insecure_channel(edge) as channel:
        stream = chat_stub(channel).StreamTurn(
            chat_pb2.StreamTurnRequest(input=turn_input("wait [scripted ttft_ms=3000]")), metadata=person.md
        )
        first = await stream.read()  # TurnStarted: the stream is open, no token yet
        assert isinstance(first, chat_pb2.StreamTurnResponse)
        assert first.event.WhichOneof("kind") == "started"
        assert active() == 1
        while await stream.read() is not grpc.aio.EOF:
            pass
    await eventually(lambda: active() == 0, "the stream to end")

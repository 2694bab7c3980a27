"""`parley chat`'s pure parts: resume bookkeeping, backoff, errors as one line, what the
terminal shows, the token store, and its options."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from parley.chat.v1 import chat_pb2
from parley.common.v1 import common_pb2
from parley_client._auth import StoredSession, TokenStore, default_store_path
from parley_client._errors import ChatError, from_rpc_error
from parley_client._render import JsonView, TextView, format_money, summary
from parley_client._turn import Backoff, TurnProgress, conversation_of
from parley_client.chat import DEFAULT_TARGET, build_parser, model_name
from parley_stack.cli import build_parser as parley_parser

TURN = "users/u1/conversations/c1/turns/t1"


def started(sequence: int = 1, turn: str = TURN, model: str = "models/parley-scripted") -> chat_pb2.TurnEvent:
    return chat_pb2.TurnEvent(
        turn=turn, sequence=sequence, started=chat_pb2.TurnStarted(turn=turn, model=model)
    )


def delta(sequence: int, text: str, turn: str = TURN) -> chat_pb2.TurnEvent:
    return chat_pb2.TurnEvent(turn=turn, sequence=sequence, delta=chat_pb2.TextDelta(text=text))


def completed(
    sequence: int,
    reason: chat_pb2.FinishReason = chat_pb2.FINISH_REASON_STOP,
    **fields: object,
) -> chat_pb2.TurnEvent:
    done = chat_pb2.TurnCompleted(
        finish_reason=reason,
        usage=common_pb2.TokenUsage(input_tokens=12, output_tokens=3),
        cost_estimate=common_pb2.Money(currency_code="USD", micros=1_800),
        **fields,  # type: ignore[arg-type]
    )
    return chat_pb2.TurnEvent(turn=TURN, sequence=sequence, completed=done)


# Resume bookkeeping ---------------------------------------------------------------------------


def test_progress_accepts_each_event_once_and_keeps_the_answer() -> None:
    progress = TurnProgress("key")
    seen = [
        progress.accept(event)
        for event in (started(), delta(2, "you"), delta(2, "you"), delta(3, " said"), delta(1, "?"))
    ]
    assert seen == [True, True, False, True, False]
    assert (progress.turn, progress.model, progress.last_sequence) == (TURN, "models/parley-scripted", 3)
    assert progress.text == "you said"
    assert progress.conversation == "users/u1/conversations/c1"


def test_progress_ignores_another_turns_events() -> None:
    progress = TurnProgress("key")
    progress.accept(started())
    assert not progress.accept(delta(2, "x", turn="users/u1/conversations/c1/turns/other"))
    assert progress.last_sequence == 1


def test_reopen_sends_the_start_again_until_the_turn_has_a_name_then_resumes() -> None:
    start = chat_pb2.TurnInput(text="hello", idempotency_key="k-1")
    progress = TurnProgress("k-1")
    assert progress.reopen(start) == chat_pb2.ChatRequest(start=start)
    progress.accept(started())
    progress.accept(delta(2, "you"))
    assert progress.reopen(start) == chat_pb2.ChatRequest(
        resume=chat_pb2.ResumeTurnRequest(name=TURN, after_sequence=2)
    )


def test_conversation_of_a_turn_name() -> None:
    assert conversation_of(TURN) == "users/u1/conversations/c1"
    assert conversation_of("users/u1/conversations/c1") == ""


def test_backoff_doubles_to_its_ceiling_and_stops_when_the_window_is_used() -> None:
    now = [0.0]
    backoff = Backoff(first_s=1.0, most_s=4.0, window_s=10.0, clock=lambda: now[0])
    delays = []
    for _ in range(4):
        delay = backoff.next_delay()
        assert delay is not None
        delays.append(delay)
    assert [0.5 <= delays[0] <= 1, 1 <= delays[1] <= 2, 2 <= delays[2] <= 4, 2 <= delays[3] <= 4] == [
        True
    ] * 4
    now[0] = 9.5
    assert backoff.next_delay() == pytest.approx(0.5, abs=0.5)
    assert (backoff.next_delay() or 0) <= 0.5
    now[0] = 10.0
    assert backoff.next_delay() is None


# Errors ---------------------------------------------------------------------------------------


def rpc_error(code: grpc.StatusCode, message: str, *details: object) -> grpc.aio.AioRpcError:
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)  # type: ignore[arg-type]
        packed.append(item)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=packed)
    trailers = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, details=message)


def test_an_error_with_reason_and_retry_delay_is_one_line() -> None:
    error = rpc_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "too many turns",
        error_details_pb2.ErrorInfo(reason="RATE_LIMITED", domain="parley.dev"),
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2, nanos=500_000_000)),
    )
    failure = from_rpc_error(error)
    assert (failure.reason, failure.retry_after_s) == ("RATE_LIMITED", 2.5)
    assert str(failure) == "too many turns (RESOURCE_EXHAUSTED: RATE_LIMITED); try again in 2.5 s"


def test_an_error_without_details_names_its_code() -> None:
    error = grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())
    assert str(from_rpc_error(error)) == "unavailable (UNAVAILABLE)"


def test_a_reason_equal_to_the_code_is_said_once() -> None:
    error = rpc_error(
        grpc.StatusCode.UNAUTHENTICATED,
        "wrong email or password",
        error_details_pb2.ErrorInfo(reason="UNAUTHENTICATED"),
    )
    assert str(from_rpc_error(error)) == "wrong email or password (UNAUTHENTICATED)"


# What the terminal shows ----------------------------------------------------------------------


def shown(events: list[chat_pb2.TurnEvent], *, color: bool = False) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    view = TextView(out, err, color=color)
    progress = TurnProgress("key")
    for event in events:
        if progress.accept(event):
            view.event(event, progress)
    return out.getvalue(), err.getvalue()


def test_text_view_prints_the_answer_then_usage_on_stderr() -> None:
    out, err = shown([started(), delta(2, "you"), delta(3, " said"), completed(4)])
    assert out == "you said\n"
    assert err == "parley-scripted | 12 tokens in, 3 out | ~0.0018 USD\n"


def test_text_view_dims_the_usage_line_on_a_terminal() -> None:
    _, err = shown([started(), completed(2)], color=True)
    assert err == "\x1b[2mparley-scripted | 12 tokens in, 3 out | ~0.0018 USD\x1b[0m\n"


def test_a_cancelled_turn_says_the_answer_is_kept() -> None:
    out, err = shown([started(), delta(2, "you"), completed(3, chat_pb2.FINISH_REASON_CANCELLED)])
    assert out == "you\n"
    assert err.startswith("cancelled; the answer so far is kept | parley-scripted")


def test_a_failed_turn_says_why() -> None:
    event = completed(
        3, chat_pb2.FINISH_REASON_ERROR, error_message="the router stopped", error_reason="ROUTER_LOST"
    )
    _, err = shown([started(), delta(2, "you"), event])
    assert err.startswith("the turn failed: the router stopped (ROUTER_LOST); the answer so far is kept |")


@pytest.mark.parametrize(
    ("terminal", "printed"), [(True, "you\n said\n"), (False, "you said\n")], ids=["terminal", "script"]
)
def test_a_note_in_the_middle_of_an_answer_starts_a_line_on_a_terminal_only(
    terminal: bool, printed: str
) -> None:
    out, err = io.StringIO(), io.StringIO()
    view = TextView(out, err, color=False, terminal=terminal)
    progress = TurnProgress("key")
    for event in (started(), delta(2, "you"), None, delta(3, " said"), completed(4)):
        if event is None:
            view.note("connection lost")
            continue
        progress.accept(event)
        view.event(event, progress)
    assert out.getvalue() == printed
    assert err.getvalue().startswith("connection lost\nparley-scripted |")


def test_an_answer_ending_right_after_a_note_on_a_terminal_adds_no_blank_line() -> None:
    out, err = io.StringIO(), io.StringIO()
    view = TextView(out, err, color=False, terminal=True)
    progress = TurnProgress("key")
    for event in (started(), delta(2, "you")):
        progress.accept(event)
        view.event(event, progress)
    view.note("cancelling the turn")
    event = completed(3, chat_pb2.FINISH_REASON_CANCELLED)
    progress.accept(event)
    view.event(event, progress)
    assert out.getvalue() == "you\n"


def test_summary_of_an_unfinished_turn() -> None:
    assert summary(TurnProgress("key")) == "the turn did not finish"


def test_money_is_exact() -> None:
    assert format_money(common_pb2.Money(currency_code="USD", micros=1_250_000)) == "1.25 USD"
    assert format_money(common_pb2.Money(currency_code="EUR", micros=3)) == "0.000003 EUR"


def test_json_view_prints_each_event_as_one_json_line() -> None:
    out, err = io.StringIO(), io.StringIO()
    view = JsonView(out, err)
    progress = TurnProgress("key")
    for event in (started(), delta(2, "hi"), completed(3)):
        progress.accept(event)
        view.event(event, progress)
    view.error(ChatError("no", grpc.StatusCode.NOT_FOUND, "CONVERSATION_NOT_FOUND"))
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line.get("sequence") for line in lines[:3]] == ["1", "2", "3"]
    assert lines[1]["delta"] == {"text": "hi"}
    assert lines[2]["completed"]["finishReason"] == "FINISH_REASON_STOP"
    assert lines[3] == {"error": {"message": "no", "code": "NOT_FOUND", "reason": "CONVERSATION_NOT_FOUND"}}
    assert err.getvalue() == ""


def test_models_are_listed_with_health_and_the_current_one_marked() -> None:
    out = io.StringIO()
    models = [
        chat_pb2.Model(name="models/smollm2", display_name="SmolLM2", health=chat_pb2.MODEL_HEALTH_READY),
        chat_pb2.Model(
            name="models/parley-tiny", display_name="Tiny", health=chat_pb2.MODEL_HEALTH_UNAVAILABLE
        ),
    ]
    TextView(out, io.StringIO(), color=False).models(models, "models/parley-tiny")
    assert out.getvalue().splitlines() == [
        "  smollm2      SmolLM2  ready",
        "* parley-tiny  Tiny     unavailable",
    ]


# The token store ------------------------------------------------------------------------------


def session(token: str = "r-1") -> StoredSession:
    return StoredSession("ada@example.com", token, 2e9, "a-1", 1.9e9)


def test_token_store_keeps_one_session_per_endpoint_readable_by_its_owner_only(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "parley" / "credentials.json")
    store.save("127.0.0.1:20000", session("r-1"))
    store.save("example.com:443", session("r-2"))
    assert store.load("127.0.0.1:20000") == session("r-1")
    assert store.load("example.com:443") == session("r-2")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    store.save("127.0.0.1:20000", None)
    assert store.load("127.0.0.1:20000") is None
    assert store.load("example.com:443") == session("r-2")
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["credentials.json"]


def test_token_store_reads_a_missing_or_broken_file_as_empty(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "credentials.json")
    assert store.load("x:1") is None
    store.path.write_text("{not json")
    assert store.load("x:1") is None
    store.save("x:1", session())
    assert store.load("x:1") == session()


def test_token_store_lives_in_the_config_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_store_path() == tmp_path / "parley" / "credentials.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert default_store_path() == Path.home() / ".config" / "parley" / "credentials.json"


# Options --------------------------------------------------------------------------------------


def test_options_default_to_the_local_public_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARLEY_TARGET", raising=False)
    monkeypatch.delenv("PARLEY_API_KEY", raising=False)
    args = build_parser().parse_args([])
    assert (args.target, args.api_key, args.model, args.message, args.json) == (
        DEFAULT_TARGET,
        "",
        "",
        [],
        False,
    )


def test_options_from_the_environment_and_repeated_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_TARGET", "127.0.0.1:27000")
    monkeypatch.setenv("PARLEY_API_KEY", "pk_secret")
    args = build_parser().parse_args(["-m", "one", "--message", "two", "--model", "smollm2", "--json"])
    assert (args.target, args.api_key, args.message, args.model, args.json) == (
        "127.0.0.1:27000",
        "pk_secret",
        ["one", "two"],
        "smollm2",
        True,
    )


def test_parley_dispatches_chat() -> None:
    args = parley_parser().parse_args(["chat", "--conversation", "users/u/conversations/c", "-m", "hi"])
    assert (args.func.__name__, args.conversation, args.message) == (
        "cmd_chat",
        "users/u/conversations/c",
        ["hi"],
    )


def test_model_names_take_either_spelling() -> None:
    assert model_name("smollm2") == "models/smollm2"
    assert model_name("models/smollm2") == "models/smollm2"
    assert model_name("") == ""

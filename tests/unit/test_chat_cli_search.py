"""`parley chat --search` and `/search` against a stand-in for HistoryService (no server, no
network): the request sent, hits with the query's words emphasised (ranges in code points),
JSON lines for scripts, and a failed search as one error line and exit status 1."""

from __future__ import annotations

import asyncio
import builtins
import io
import json
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from google.protobuf import duration_pb2, json_format
from google.rpc import error_details_pb2

from parley.history.v1 import history_pb2 as pb
from parley_client import chat
from parley_client._auth import SignIn
from parley_client._errors import ChatError
from parley_client._render import JsonView, TextView
from parley_client._search import SearchClient, highlighted
from parley_client.chat import CALL_TIMEOUT_S, EXIT_FAILED, HELP, ChatClient, build_parser, conversation_name
from tests.unit.test_chat_cli import rpc_error
from tests.unit.test_chat_cli_sign_in import FakeSession
from tests.unit.test_chat_cli_turns import FakeChat, FakeSignIn

pytestmark = pytest.mark.timeout(30)

CONVERSATION = "users/u1/conversations/c1"
MESSAGE = f"{CONVERSATION}/messages/m1"
CAR = "I spent the weekend fixing my car: new brake pads."


def hit(
    snippet: str = CAR,
    *matches: tuple[int, int],
    title: str = "Car trouble",
    author: pb.Author = pb.AUTHOR_USER,
    model: str = "",
    name: str = MESSAGE,
) -> pb.SearchHit:
    return pb.SearchHit(
        message=pb.Message(name=name, author=author, model=model, text=snippet),
        conversation_title=title,
        snippet=snippet,
        score=0.5,
        snippet_matches=[pb.TextRange(start=start, end=end) for start, end in matches],
    )


#: CAR with "brake" and "pads" matched.
BRAKE_PADS = hit(CAR, (39, 44), (45, 49))


class FakeHistory:
    """HistoryService's stub: records each SearchMessages call, answers with reply or error."""

    def __init__(self, *hits: pb.SearchHit, next_page_token: str = "") -> None:
        self.reply = pb.SearchMessagesResponse(hits=hits, next_page_token=next_page_token)
        self.error: grpc.aio.AioRpcError | None = None
        self.calls: list[tuple[pb.SearchMessagesRequest, Any, Any]] = []

    async def SearchMessages(
        self, request: pb.SearchMessagesRequest, **options: Any
    ) -> pb.SearchMessagesResponse:
        self.calls.append((request, options.get("metadata"), options.get("timeout")))
        if self.error is not None:
            raise self.error
        return self.reply


def search_client(history: FakeHistory) -> SearchClient:
    return SearchClient(cast(Any, history), cast(SignIn, FakeSignIn()), timeout_s=CALL_TIMEOUT_S)


def shown(hits: list[pb.SearchHit], *, more: bool = False, **view: bool) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    TextView(out, err, color=view.get("color", False), terminal=view.get("terminal", False)).hits(
        hits, more=more
    )
    return out.getvalue(), err.getvalue()


#: What svc_history says while Weaviate is down.
UNAVAILABLE = "search is unavailable (weaviate); retry shortly. Conversations and chat are not affected"


def search_unavailable() -> grpc.aio.AioRpcError:
    return rpc_error(
        grpc.StatusCode.UNAVAILABLE,
        UNAVAILABLE,
        error_details_pb2.ErrorInfo(reason="SEARCH_UNAVAILABLE", domain="parley.dev"),
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=5)),
    )


# The request ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "sent"),
    [
        ("full_text", pb.SEARCH_MODE_FULL_TEXT),
        ("semantic", pb.SEARCH_MODE_SEMANTIC),
        ("hybrid", pb.SEARCH_MODE_HYBRID),
    ],
)
async def test_a_search_asks_for_one_page_of_the_callers_messages(mode: str, sent: pb.SearchMode) -> None:
    history = FakeHistory(BRAKE_PADS)
    reply = await search_client(history).search("brake pads", mode)
    assert list(reply.hits) == [BRAKE_PADS]
    assert history.calls == [
        (
            pb.SearchMessagesRequest(parent="users/me", query="brake pads", mode=sent, page_size=20),
            (("authorization", "Bearer t-1"),),
            CALL_TIMEOUT_S,
        )
    ]


async def test_the_mode_is_hybrid_unless_asked() -> None:
    args = build_parser().parse_args(["--search", "brake pads"])
    history = FakeHistory()
    await search_client(history).search(args.search, args.search_mode)
    await search_client(history).search("brake pads")
    assert [request.mode for request, _, _ in history.calls] == [pb.SEARCH_MODE_HYBRID] * 2


def test_search_modes_are_spelled_as_the_option_says() -> None:
    parser = build_parser()
    assert parser.parse_args(["--search", "x", "--search-mode", "full_text"]).search_mode == "full_text"
    with pytest.raises(SystemExit):
        parser.parse_args(["--search", "x", "--search-mode", "FULL_TEXT"])


async def test_a_failed_search_is_one_error_with_its_reason_and_retry_delay() -> None:
    history = FakeHistory()
    history.error = search_unavailable()
    with pytest.raises(ChatError) as caught:
        await search_client(history).search("brake pads")
    assert (caught.value.code, caught.value.reason, caught.value.retry_after_s) == (
        grpc.StatusCode.UNAVAILABLE,
        "SEARCH_UNAVAILABLE",
        5.0,
    )


# What the terminal shows ----------------------------------------------------------------------


def test_hits_show_title_author_snippet_with_bracketed_matches_and_the_message_name() -> None:
    answer = hit(
        "Brakes fixed: the pads were worn.", (18, 22), author=pb.AUTHOR_ASSISTANT, model="models/smollm2"
    )
    out, err = shown([BRAKE_PADS, answer])
    assert out == (
        "Car trouble | you\n"
        "  I spent the weekend fixing my car: new [brake] [pads].\n"
        f"  {MESSAGE}\n"
        "\n"
        "Car trouble | smollm2\n"
        "  Brakes fixed: the [pads] were worn.\n"
        f"  {MESSAGE}\n"
    )
    assert err == "2 hits\n"


def test_on_a_terminal_matches_are_bold_and_the_name_dimmed() -> None:
    out, err = shown([BRAKE_PADS], color=True, terminal=True)
    assert out == (
        "Car trouble | you\n"
        "  I spent the weekend fixing my car: new \x1b[1mbrake\x1b[0m \x1b[1mpads\x1b[0m.\n"
        f"  \x1b[2m{MESSAGE}\x1b[0m\n"
    )
    assert err == "\x1b[2m1 hit\x1b[0m\n"


def test_hits_piped_from_a_terminal_session_carry_no_escape_sequences() -> None:
    # Color on stderr (a terminal) but stdout is a pipe: the hits there stay plain text.
    out, _ = shown([BRAKE_PADS], color=True, terminal=False)
    assert "\x1b" not in out
    assert "new [brake] [pads]." in out


def test_match_ranges_count_code_points_not_bytes_or_utf16_units() -> None:
    # The emoji is 1 code point, 2 UTF-16 units and 4 bytes; "ë", "è", "û" 2 bytes each.
    snippet = "Zoë 🍮 crème brûlée, encore!"
    pieces = highlighted(snippet, [pb.TextRange(start=6, end=11), pb.TextRange(start=12, end=18)])
    assert pieces == [
        ("Zoë 🍮 ", False),
        ("crème", True),
        (" ", False),
        ("brûlée", True),
        (", encore!", False),
    ]
    out, _ = shown([hit(snippet, (6, 11), (12, 18), title="Dessert")])
    assert out.splitlines()[1] == "  Zoë 🍮 [crème] [brûlée], encore!"


def test_a_snippet_is_shown_on_one_line_without_its_control_characters() -> None:
    out, _ = shown([hit("brake\npads\x1b[31m!", (0, 5), (6, 10), title="")])
    assert out.splitlines()[:2] == ["(untitled) | you", "  [brake] [pads] [31m!"]


def test_ranges_outside_the_snippet_or_overlapping_are_cut_to_what_is_left() -> None:
    ranges = [pb.TextRange(start=s, end=e) for s, e in ((-2, 3), (2, 5), (7, 7), (8, 99))]
    assert highlighted("abcdefghij", ranges) == [
        ("abc", True),
        ("de", True),
        ("fgh", False),
        ("ij", True),
    ]


def test_no_hits_is_said_and_nothing_is_printed_for_scripts() -> None:
    assert shown([]) == ("", "no messages match\n")
    out, err = io.StringIO(), io.StringIO()
    JsonView(out, err).hits([], more=False)
    assert (out.getvalue(), err.getvalue()) == ("", "no messages match\n")


def test_a_full_page_says_there_are_more() -> None:
    _, err = shown([BRAKE_PADS] * 20, more=True)
    assert err == "20 hits, the best of more: add words to narrow the search\n"


def test_json_view_prints_each_hit_as_one_proto3_json_line() -> None:
    out, err = io.StringIO(), io.StringIO()
    dessert = hit("Zoë 🍮 crème", (6, 11), title="Dessert", name=f"{CONVERSATION}/messages/m2")
    JsonView(out, err).hits([BRAKE_PADS, dessert], more=True)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [json_format.MessageToDict(BRAKE_PADS), json_format.MessageToDict(dessert)]
    assert lines[1]["snippet"] == "Zoë 🍮 crème"
    assert lines[1]["snippetMatches"] == [{"start": 6, "end": 11}]
    assert lines[1]["message"]["name"] == f"{CONVERSATION}/messages/m2"
    assert err.getvalue() == "2 hits, the best of more: add words to narrow the search\n"


def test_a_message_name_from_a_search_names_the_conversation_to_continue() -> None:
    assert conversation_name(MESSAGE) == CONVERSATION
    assert conversation_name(CONVERSATION) == CONVERSATION
    assert conversation_name("") == ""


# `parley chat --search` from start to exit status -------------------------------------------


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeHistory:
    """`parley chat`'s stubs replaced by stand-ins; an API key signs in, nothing is stored."""
    history = FakeHistory(BRAKE_PADS)
    monkeypatch.setattr(chat, "stubs", lambda channel: (FakeChat(lambda call, request: None), FakeSession()))
    monkeypatch.setattr(chat, "history_stub", lambda channel: history)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("PARLEY_API_KEY", "pk_secret")
    monkeypatch.setenv("NO_COLOR", "1")
    return history


def test_parley_chat_search_prints_the_hits_and_exits_0(
    fakes: FakeHistory, capsys: pytest.CaptureFixture[str]
) -> None:
    code = chat.main(["--search", "brake pads", "--search-mode", "full_text"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "1 hit\n")
    assert (
        out == f"Car trouble | you\n  I spent the weekend fixing my car: new [brake] [pads].\n  {MESSAGE}\n"
    )
    [(request, metadata, _)] = fakes.calls
    assert (request.query, request.mode) == ("brake pads", pb.SEARCH_MODE_FULL_TEXT)
    assert metadata == (("authorization", "Bearer k-1"),)


def test_parley_chat_search_that_fails_says_why_and_exits_1(
    fakes: FakeHistory, capsys: pytest.CaptureFixture[str]
) -> None:
    fakes.error = search_unavailable()
    code = chat.main(["--search", "brake pads"])
    out, err = capsys.readouterr()
    assert (code, out) == (EXIT_FAILED, "")
    assert err == f"error: {UNAVAILABLE} (UNAVAILABLE: SEARCH_UNAVAILABLE); try again in 5 s\n"


def test_parley_chat_search_that_fails_in_json_is_an_error_line(
    fakes: FakeHistory, capsys: pytest.CaptureFixture[str]
) -> None:
    fakes.error = search_unavailable()
    code = chat.main(["--search", "brake pads", "--json"])
    out, _ = capsys.readouterr()
    assert code == EXIT_FAILED
    assert json.loads(out) == {
        "error": {
            "message": UNAVAILABLE,
            "code": "UNAVAILABLE",
            "reason": "SEARCH_UNAVAILABLE",
            "retryAfterSeconds": 5.0,
        }
    }


# `/search` at the prompt ----------------------------------------------------------------------


def test_slash_search_at_the_prompt_runs_a_hybrid_search(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = iter(["/search", "/search  brake pads ", "/quit"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(lines))
    history = FakeHistory(BRAKE_PADS)
    out, err = io.StringIO(), io.StringIO()
    view = TextView(out, err, color=False)
    sign_in = cast(SignIn, FakeSignIn())
    with asyncio.Runner() as runner:
        code = chat._interactive(
            runner, ChatClient(cast(Any, FakeChat(lambda call, request: None)), sign_in, view),
            SearchClient(cast(Any, history), sign_in, timeout_s=CALL_TIMEOUT_S), view,
        )  # fmt: skip
    assert code == 0
    assert [(request.query, request.mode) for request, _, _ in history.calls] == [
        ("brake pads", pb.SEARCH_MODE_HYBRID)
    ]
    assert "usage: /search TEXT\n" in err.getvalue()
    assert out.getvalue().startswith("Car trouble | you\n")


def test_help_lists_slash_search() -> None:
    assert "/search TEXT" in HELP

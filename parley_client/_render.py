"""What the terminal shows: the answer on stdout as it streams, everything else on stderr.

Two views with one interface: `TextView` for people (the answer, then a dimmed usage
line) and `JsonView` for scripts (each event as a JSON line, in the contract's JSON form).
Both say on stderr, in one line, when a turn could pass a monthly budget's soft limit.
Search hits go to stdout as well (three lines each, or a JSON line each); how many, on stderr.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Protocol, TextIO

from google.protobuf import json_format

from parley.chat.v1 import chat_pb2
from parley.common.v1 import common_pb2
from parley.history.v1 import history_pb2
from parley_client._errors import ChatError
from parley_client._search import highlighted, one_line
from parley_client._turn import TurnProgress

__all__ = [
    "JsonView",
    "TextView",
    "View",
    "author",
    "budget_warning",
    "format_money",
    "hits_summary",
    "summary",
]

_DIM, _BOLD, _RESET = "\x1b[2m", "\x1b[1m", "\x1b[0m"

_HEALTH = {
    chat_pb2.MODEL_HEALTH_UNSPECIFIED: "unknown",
    chat_pb2.MODEL_HEALTH_READY: "ready",
    chat_pb2.MODEL_HEALTH_DEGRADED: "degraded",
    chat_pb2.MODEL_HEALTH_UNAVAILABLE: "unavailable",
}


class View(Protocol):
    def event(self, event: chat_pb2.TurnEvent, progress: TurnProgress) -> None:
        """A new event of the turn (never one shown before); progress already holds it."""

    def note(self, text: str) -> None:
        """Something the client did on its own (reconnecting, cancelling)."""

    def error(self, error: ChatError) -> None: ...

    def conversation(self, name: str) -> None:
        """The first turn of a new conversation named it."""

    def models(self, models: Sequence[chat_pb2.Model], current: str) -> None: ...

    def hits(self, hits: Sequence[history_pb2.SearchHit], *, more: bool) -> None:
        """A search's hits, the best first; more: the server has further pages."""


def format_money(money: common_pb2.Money) -> str:
    """`0.000123 USD`: exact, from integer micro-units."""
    amount = Decimal(money.micros) / 1_000_000
    return f"{amount:f} {money.currency_code}".strip()


def short_model(name: str) -> str:
    return name.removeprefix("models/")


def budget_warning(started: chat_pb2.TurnStarted) -> str:
    """One line for the budgets a turn could take past their soft limit; empty for none."""
    if not started.budget_warnings:
        return ""
    parts = [
        f"{w.budget} could reach {format_money(w.committed)} this month, "
        f"past its soft limit of {format_money(w.soft_limit)}"
        for w in started.budget_warnings
    ]
    return "warning: " + "; ".join(parts)


def author(message: history_pb2.Message) -> str:
    """Who wrote a message, as its reader says it: "you", the model, or "system"."""
    if message.author == history_pb2.AUTHOR_USER:
        return "you"
    if message.author == history_pb2.AUTHOR_ASSISTANT:
        return short_model(message.model) or "assistant"
    if message.author == history_pb2.AUTHOR_SYSTEM:
        return "system"
    return "unknown"


def hits_summary(count: int, *, more: bool) -> str:
    """The line after a search's hits."""
    if not count:
        return "no messages match"
    line = f"{count} hit{'' if count == 1 else 's'}"
    return f"{line}, the best of more: add words to narrow the search" if more else line


def summary(progress: TurnProgress) -> str:
    """The line after an answer: how it ended, the model, tokens and the cost estimate."""
    done = progress.completed
    if done is None:
        return "the turn did not finish"
    parts: list[str] = []
    if done.finish_reason == chat_pb2.FINISH_REASON_CANCELLED:
        parts.append("cancelled; the answer so far is kept")
    elif done.finish_reason == chat_pb2.FINISH_REASON_MAX_TOKENS:
        parts.append("cut off at the model's output limit")
    elif done.finish_reason == chat_pb2.FINISH_REASON_ERROR:
        why = f" ({done.error_reason})" if done.error_reason else ""
        message = done.error_message or "no reason given"
        parts.append(f"the turn failed: {message}{why}; the answer so far is kept")
    if progress.model:
        parts.append(short_model(progress.model))
    if done.HasField("usage"):
        parts.append(f"{done.usage.input_tokens} tokens in, {done.usage.output_tokens} out")
    if done.HasField("cost_estimate") and done.cost_estimate.currency_code:
        parts.append(f"~{format_money(done.cost_estimate)}")
    return " | ".join(parts)


class TextView:
    """For people: deltas as they arrive, then the summary dimmed on stderr."""

    def __init__(self, out: TextIO, err: TextIO, *, color: bool, terminal: bool = False) -> None:
        self.out, self.err, self.color = out, err, color
        #: Whether stdout and stderr are one terminal: a note then breaks the answer's line
        #: (never in a script's stdout, which holds exactly the answers).
        self.terminal = terminal
        #: An answer is being printed and its line is not finished.
        self._mid_answer = False

    def _dim(self, text: str) -> str:
        return f"{_DIM}{text}{_RESET}" if self.color else text

    def event(self, event: chat_pb2.TurnEvent, progress: TurnProgress) -> None:
        kind = event.WhichOneof("kind")
        if kind == "started" and (warning := budget_warning(event.started)):
            self.note(warning)
        elif kind == "delta":
            self.out.write(event.delta.text)
            self.out.flush()
            self._mid_answer = True
        elif kind == "completed":
            if self._mid_answer or not self.terminal:
                self.out.write("\n")
            self._mid_answer = False
            self.out.flush()
            self.err.write(self._dim(summary(progress)) + "\n")
            self.err.flush()

    def note(self, text: str) -> None:
        self._break_line()
        self.err.write(self._dim(text) + "\n")
        self.err.flush()

    def error(self, error: ChatError) -> None:
        self._break_line()
        self.err.write(f"error: {error}\n")
        self.err.flush()

    def _break_line(self) -> None:
        """A note in the middle of an answer goes on a line of its own."""
        if self._mid_answer and self.terminal:
            self.out.write("\n")
            self.out.flush()
            self._mid_answer = False

    def conversation(self, name: str) -> None:
        self.note(f"conversation {name} (continue it with --conversation {name})")

    def models(self, models: Sequence[chat_pb2.Model], current: str) -> None:
        names = max((len(short_model(m.name)) for m in models), default=0)
        titles = max((len(m.display_name) for m in models), default=0)
        for model in models:
            mark = "*" if short_model(model.name) == short_model(current) else " "
            health = _HEALTH.get(model.health, "unknown")
            line = f"{mark} {short_model(model.name):<{names}}  {model.display_name:<{titles}}  {health}"
            self.out.write(line + "\n")
        self.out.flush()

    def hits(self, hits: Sequence[history_pb2.SearchHit], *, more: bool) -> None:
        """Each hit as its conversation's title and the author, the snippet, and the message's
        name (`--conversation` takes it to continue that conversation).

        The query's words in the snippet are bold on a terminal; in a pipe, or with
        NO_COLOR, they are in [brackets], and nothing is dimmed.
        """
        styled = self.color and self.terminal  # stdout is the terminal too
        for index, hit in enumerate(hits):
            if index:
                self.out.write("\n")
            title = one_line(hit.conversation_title) or "(untitled)"
            snippet = "".join(
                (f"{_BOLD}{piece}{_RESET}" if styled else f"[{piece}]") if match else piece
                for piece, match in highlighted(hit.snippet, hit.snippet_matches)
            )
            name = f"{_DIM}{hit.message.name}{_RESET}" if styled else hit.message.name
            self.out.write(f"{title} | {author(hit.message)}\n  {snippet}\n  {name}\n")
        self.out.flush()
        self.note(hits_summary(len(hits), more=more))


class JsonView:
    """For scripts: one JSON object per line on stdout; notes stay on stderr."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err

    def _line(self, value: object) -> None:
        self.out.write(json.dumps(value, separators=(",", ":")) + "\n")
        self.out.flush()

    def event(self, event: chat_pb2.TurnEvent, progress: TurnProgress) -> None:
        self._line(json_format.MessageToDict(event))
        if event.WhichOneof("kind") == "started" and (warning := budget_warning(event.started)):
            self.note(warning)

    def note(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    def error(self, error: ChatError) -> None:
        self._line({"error": error.as_json()})

    def conversation(self, name: str) -> None:
        """Scripts read it from the events' `turn`."""

    def models(self, models: Sequence[chat_pb2.Model], current: str) -> None:
        for model in models:
            self._line(json_format.MessageToDict(model))

    def hits(self, hits: Sequence[history_pb2.SearchHit], *, more: bool) -> None:
        for hit in hits:
            self._line(json_format.MessageToDict(hit))
        self.note(hits_summary(len(hits), more=more))

"""What parley-scripted answers, and how: pure Python, no Triton, so it can be read and tried alone.

The model answers with the context it received ("you said: first | second"), so a test can
see exactly which turns reached the model and in which order. How it answers (time to the
first token, tokens per second, length, a failure) is a `Script`: the config's defaults,
overridden by the request's parameters, overridden by `[scripted key=value ...]` directives
in the last user turn (so that a test driving the whole platform can script one turn
without the router knowing about this model).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

# ChatML, the template SmolLM2-Instruct was trained with: <|im_start|>role\ntext<|im_end|>.
_CHATML_TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)(?:<\|im_end\|>|\Z)", re.DOTALL)
_DIRECTIVE = re.compile(r"\[scripted((?:\s+\w+=[^\s\]]+)+)\s*\]")
_NO_LIMIT = -1


class ScriptError(ValueError):
    """A parameter or directive that cannot be followed (the client's mistake: INVALID_ARG)."""


def tokenize(text: str) -> list[str]:
    """The model's own tokens: whitespace-separated words. Prompt and reply are counted alike."""
    return text.split()


@dataclass(frozen=True)
class Turn:
    role: str
    text: str


def parse_turns(prompt: str) -> list[Turn]:
    """The turns of a ChatML prompt; any other prompt is one user turn."""
    turns = [Turn(role, text) for role, text in _CHATML_TURN.findall(prompt)]
    if turns:
        return turns
    return [Turn("user", prompt)] if prompt.strip() else []


_ROLES = frozenset({"system", "user", "assistant"})


def parse_messages(raw: str) -> list[Turn]:
    """The turns of a `messages` input: JSON [{"role": ..., "content": ...}], oldest first."""
    try:
        messages = json.loads(raw)
    except ValueError as error:
        raise ScriptError(f"messages is not JSON: {error}") from None
    if not isinstance(messages, list) or not messages:
        raise ScriptError("the conversation is empty")
    turns: list[Turn] = []
    for position, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or set(message) != {"role", "content"}
            or message["role"] not in _ROLES
            or not isinstance(message["content"], str)
        ):
            raise ScriptError(
                f"messages[{position}] must be {{'role': 'system' | 'user' | 'assistant', 'content': string}}"
            )
        turns.append(Turn(message["role"], message["content"]))
    return turns


def chatml(turns: list[Turn]) -> str:
    """The turns as a ChatML prompt, so that a conversation is counted alike in either input."""
    rendered = "".join(f"<|im_start|>{turn.role}\n{turn.text}<|im_end|>\n" for turn in turns)
    return rendered + "<|im_start|>assistant\n"


@dataclass(frozen=True)
class Script:
    """How one request is answered. Every field is also a request parameter and a directive."""

    #: Milliseconds from the request's arrival to the first token.
    ttft_ms: int = 0
    #: Tokens per second after the first; 0 sends them as fast as the stream takes them.
    tokens_per_second: float = 0.0
    #: Fail (UNAVAILABLE) where token N would come; 0 fails before the first token, -1 never.
    fail_after_tokens: int = _NO_LIMIT
    #: The reply's length in tokens: the echo repeated or cut to this length; 0 keeps the echo.
    reply_tokens: int = 0

    def updated(self, values: Mapping[str, object], *, source: str, strict: bool) -> Script:
        """This script with `values` applied; unknown names are an error only when `strict`."""
        changes: dict[str, object] = {}
        for name, value in values.items():
            if name not in _FIELDS:
                if strict:
                    raise ScriptError(f"unknown {source} {name!r}; known: {', '.join(_FIELDS)}")
                continue
            changes[name] = _checked(name, value, source)
        return replace(self, **changes)  # type: ignore[arg-type]


_FIELDS = ("ttft_ms", "tokens_per_second", "fail_after_tokens", "reply_tokens")


def _number(name: str, value: object, source: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value) if name == "tokens_per_second" else int(value)
        except ValueError:
            raise ScriptError(f"{source} {name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScriptError(f"{source} {name} must be a number, got {value!r}")
    if name != "tokens_per_second" and value != int(value):
        raise ScriptError(f"{source} {name} must be a whole number, got {value!r}")
    return value


def _checked(name: str, value: object, source: str) -> int | float:
    number = _number(name, value, source)
    lowest = _NO_LIMIT if name == "fail_after_tokens" else 0
    if number < lowest:
        raise ScriptError(f"{source} {name} must be at least {lowest}, got {value!r}")
    return float(number) if name == "tokens_per_second" else int(number)


def directives(text: str) -> dict[str, str]:
    """The `[scripted key=value ...]` settings written in a turn, in order."""
    found: dict[str, str] = {}
    for match in _DIRECTIVE.finditer(text):
        for pair in match.group(1).split():
            key, value = pair.split("=", 1)
            found[key] = value
    return found


def _spoken(text: str) -> str:
    """A turn as the echo repeats it: directives removed, whitespace collapsed."""
    return " ".join(tokenize(_DIRECTIVE.sub(" ", text)))


def script_for(turns: list[Turn], base: Script) -> Script:
    """`base` with the directives of the last user turn (the one being answered)."""
    user_turns = [turn for turn in turns if turn.role == "user"]
    if not user_turns:
        return base
    return base.updated(directives(user_turns[-1].text), source="directive", strict=True)


def echo(turns: list[Turn]) -> str:
    """The reply: the system prompt if there is one, then every user turn, in order."""
    said = [text for turn in turns if turn.role == "user" if (text := _spoken(turn.text))]
    system = [text for turn in turns if turn.role == "system" if (text := _spoken(turn.text))]
    reply = f"you said: {' | '.join(said)}" if said else "you said nothing"
    if system:
        reply = f"(system: {' | '.join(system)}) {reply}"
    return reply


@dataclass(frozen=True)
class Reply:
    tokens: list[str]
    #: "stop" when the whole reply fits in max_tokens, "length" when max_tokens cut it.
    finish_reason: str

    def piece(self, index: int) -> str:
        """The text token `index` adds: a space before every token but the first."""
        return self.tokens[index] if index == 0 else " " + self.tokens[index]


def plan(turns: list[Turn], script: Script, max_tokens: int) -> Reply:
    tokens = tokenize(echo(turns))
    if script.reply_tokens:
        tokens = list(itertools.islice(itertools.cycle(tokens), script.reply_tokens))
    if len(tokens) > max_tokens:
        return Reply(tokens[:max_tokens], "length")
    return Reply(tokens, "stop")

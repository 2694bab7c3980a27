"""The checks every write passes before it changes anything, against the configured limits.

Each check returns the field violations it found (empty when the value is fine), so a
request with several bad fields hears about all of them at once. Page sizes are not here:
they are clamped, never refused above the maximum (parley_core.paging.page_size).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from parley_core.errors import FieldViolation
from svc_history.settings import Limits

#: Title made from a first message when the creator left it empty.
AUTO_TITLE_CHARS = 60

_FOLDER_SEGMENT = 64


def _has_control(value: str, *, allow_newlines: bool = False) -> bool:
    for char in value:
        if allow_newlines and char in "\n\r\t":
            continue
        if unicodedata.category(char) in ("Cc", "Cs"):
            return True
    return False


def _text(field: str, value: str, maximum: int, *, multiline: bool = False) -> list[FieldViolation]:
    if len(value) > maximum:
        return [FieldViolation(field, f"must be at most {maximum} characters")]
    if _has_control(value, allow_newlines=multiline):
        return [FieldViolation(field, "must not contain control characters")]
    return []


def title(field: str, value: str, limits: Limits) -> list[FieldViolation]:
    return _text(field, value, limits.title_chars)


def model(field: str, value: str, limits: Limits) -> list[FieldViolation]:
    if value and not re.fullmatch(r"[A-Za-z0-9._:/@-]+", value):
        return [FieldViolation(field, "must be a model name (letters, digits and ._:/@-)")]
    return _text(field, value, limits.model_chars)


def system_prompt(field: str, value: str, limits: Limits) -> list[FieldViolation]:
    return _text(field, value, limits.system_prompt_chars, multiline=True)


def folder(field: str, value: str, limits: Limits) -> list[FieldViolation]:
    if not value:
        return []
    if len(value) > limits.folder_chars:
        return [FieldViolation(field, f"must be at most {limits.folder_chars} characters")]
    segments = value.split("/")
    if any(not s.strip() or s != s.strip() or len(s) > _FOLDER_SEGMENT for s in segments):
        return [
            FieldViolation(
                field,
                f"must be a path like 'work/clients': segments of 1 to {_FOLDER_SEGMENT} characters, "
                "no empty segment, no leading or trailing slash or space",
            )
        ]
    return _text(field, value, limits.folder_chars)


def tags(field: str, values: Sequence[str], limits: Limits) -> list[FieldViolation]:
    found: list[FieldViolation] = []
    if len(values) > limits.tags_per_conversation:
        found.append(FieldViolation(field, f"must hold at most {limits.tags_per_conversation} tags"))
    for index, tag in enumerate(values):
        where = f"{field}[{index}]"
        if not tag.strip() or len(tag) > limits.tag_chars:
            found.append(
                FieldViolation(where, f"must be 1 to {limits.tag_chars} characters, not only spaces")
            )
        elif _has_control(tag):
            found.append(FieldViolation(where, "must not contain control characters"))
    if len(set(values)) != len(values):
        found.append(FieldViolation(field, "must not repeat a tag"))
    return found


def message_text(field: str, value: str, author: str, limits: Limits) -> list[FieldViolation]:
    if len(value) > limits.message_chars:
        return [FieldViolation(field, f"must be at most {limits.message_chars} characters")]
    if author != "assistant" and not value.strip():
        # An assistant's message may be empty: a turn cancelled before its first token.
        return [FieldViolation(field, "must not be empty")]
    if "\x00" in value:
        return [FieldViolation(field, "must not contain NUL characters")]
    return []


def share_password(field: str, value: str, limits: Limits) -> list[FieldViolation]:
    if len(value) > limits.share_password_chars:
        return [FieldViolation(field, f"must be at most {limits.share_password_chars} characters")]
    if value and not value.strip():
        return [FieldViolation(field, "must not be only whitespace")]
    return []


def title_from_text(text: str) -> str:
    """A conversation title from its first message: its opening words, cut at a word."""
    words = " ".join("".join(c for c in text if unicodedata.category(c) != "Cc" or c.isspace()).split())
    if len(words) <= AUTO_TITLE_CHARS:
        return words
    cut = words[:AUTO_TITLE_CHARS]
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,.;:-") + "…"

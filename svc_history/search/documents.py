"""What the index holds of a message, and snippets with the query's words marked.

An object's id is derived from the message's resource name, so a redelivered event, a
retried batch and a reindex all write the same object again instead of a second one.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from svc_history.model import Message, message_name

__all__ = ["IndexedMessage", "Snippet", "object_id", "query_words", "snippet"]

#: The namespace of object ids (uuid5 of the message's resource name).
_NAMESPACE = uuid.UUID("5b0d3c2e-9f3a-4c55-8e0c-2d7a0c61e7a4")

#: Words as Weaviate's `word` tokenization sees them: runs of letters and digits.
_WORD = re.compile(r"[^\W_]+")

#: Snippets are about this many characters, with this many before the first match.
SNIPPET_CHARS = 200
_LEAD_CHARS = 60
_ELLIPSIS = "…"


def object_id(user_id: str, conversation_id: str, message_id: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, message_name(user_id, conversation_id, message_id))


@dataclass(frozen=True)
class IndexedMessage:
    """One object of the collection (its tenant is the user)."""

    user_id: str
    conversation_id: str
    message_id: str
    author: str
    text: str
    create_time: datetime

    @classmethod
    def of(cls, message: Message) -> IndexedMessage:
        return cls(
            message.user_id,
            message.conversation_id,
            message.message_id,
            message.author,
            message.text,
            message.create_time,
        )

    @property
    def indexable(self) -> bool:
        """Whether the message goes into the index: one without text has nothing to find."""
        return bool(self.text.strip())

    @property
    def object_id(self) -> uuid.UUID:
        return object_id(self.user_id, self.conversation_id, self.message_id)

    def properties(self) -> dict[str, object]:
        return {
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            "author": self.author,
            "text": self.text,
            "create_time": self.create_time,
        }


def query_words(query: str) -> set[str]:
    """The query's words, lower-cased, as full-text search matches them."""
    return {word.lower() for word in _WORD.findall(query)}


@dataclass(frozen=True)
class Snippet:
    text: str
    #: [start, end) code point ranges of `text` that are query words, in order.
    matches: tuple[tuple[int, int], ...]


def snippet(text: str, query: str) -> Snippet:
    """About SNIPPET_CHARS characters of `text` around its first word from `query`, with
    every query word in it marked; the text's start when no query word occurs in it."""
    words = query_words(query)
    found = [m for m in _WORD.finditer(text) if m.group().lower() in words]
    start = 0
    if found and found[0].start() > _LEAD_CHARS:
        start = _word_start(text, found[0].start() - _LEAD_CHARS)
    end = min(len(text), start + SNIPPET_CHARS)
    if end < len(text):
        end = _word_end(text, start, end)
    prefix = _ELLIPSIS if start > 0 else ""
    suffix = _ELLIPSIS if end < len(text) else ""
    body = text[start:end]
    shift = len(prefix) - start
    matches = tuple(
        (m.start() + shift, m.end() + shift) for m in found if m.start() >= start and m.end() <= end
    )
    return Snippet(prefix + body + suffix, matches)


def _word_start(text: str, position: int) -> int:
    """The start of the first whole word at or after `position`."""
    space = text.find(" ", position)
    return position if space < 0 or space - position > 20 else space + 1


def _word_end(text: str, start: int, end: int) -> int:
    """`end`, moved back to the end of the last whole word before it."""
    space = text.rfind(" ", start, end)
    return end if space < 0 or end - space > 20 else space

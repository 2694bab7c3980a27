"""Searching the caller's own messages: `HistoryService.SearchMessages`.

A search matches by words (full text), by meaning (semantic) or both fused into one
ranking (hybrid, the server's default). Each hit carries its message, the conversation's
title, a plain-text snippet, and where the query's words occur in that snippet as
[start, end) ranges of Unicode code points: Python's own string indices, so a range
slices the snippet as it stands (a byte or UTF-16 offset would not).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import TYPE_CHECKING

import grpc

from parley.history.v1 import history_pb2
from parley_client._auth import SignIn
from parley_client._errors import from_rpc_error

if TYPE_CHECKING:
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub

__all__ = ["MODES", "PAGE_SIZE", "SearchClient", "conversation_of_message", "highlighted", "one_line"]

#: `--search-mode`'s spellings.
MODES = {
    "full_text": history_pb2.SEARCH_MODE_FULL_TEXT,
    "semantic": history_pb2.SEARCH_MODE_SEMANTIC,
    "hybrid": history_pb2.SEARCH_MODE_HYBRID,
}
#: One page of hits, the best first: enough to find a conversation again, short enough to
#: read. The server's default, said out loud.
PAGE_SIZE = 20


def conversation_of_message(name: str) -> str:
    """The conversation of a message name, `users/{u}/conversations/{c}/messages/{m}`."""
    conversation, found, _ = name.partition("/messages/")
    return conversation if found else ""


def one_line(text: str) -> str:
    """text with each control character (a line break, a tab, the escape that starts a
    terminal sequence) turned into a space: one code point for one, so ranges still fit."""
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)


def highlighted(snippet: str, matches: Iterable[history_pb2.TextRange]) -> list[tuple[str, bool]]:
    """The snippet on one line (`one_line`), in pieces, each with whether it is a match.

    Ranges reaching outside the snippet, or into an earlier one, are cut to what is left
    of them; an empty one is dropped.
    """
    text = one_line(snippet)
    pieces: list[tuple[str, bool]] = []
    done = 0
    for match in sorted(matches, key=lambda m: (m.start, m.end)):
        start, end = max(match.start, done), min(match.end, len(text))
        if start >= end:
            continue
        if start > done:
            pieces.append((text[done:start], False))
        pieces.append((text[start:end], True))
        done = end
    if done < len(text):
        pieces.append((text[done:], False))
    return pieces


class SearchClient:
    """Searches the signed-in caller's messages."""

    def __init__(self, history: HistoryServiceAsyncStub, sign_in: SignIn, *, timeout_s: float) -> None:
        self.history, self.sign_in = history, sign_in
        self._timeout_s = timeout_s

    async def search(self, query: str, mode: str = "hybrid") -> history_pb2.SearchMessagesResponse:
        """The first page of hits for query; mode is one of MODES."""
        request = history_pb2.SearchMessagesRequest(
            parent="users/me", query=query, mode=MODES[mode], page_size=PAGE_SIZE
        )
        try:
            return await self.history.SearchMessages(
                request, metadata=await self.sign_in.metadata(), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None

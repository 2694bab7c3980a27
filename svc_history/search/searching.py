"""SearchMessages: one page of a user's hits, each read back from Cassandra.

The index says which messages match; Cassandra says what they are now. A hit whose
conversation or message no longer exists (deleted while the indexer has not caught up) is
left out, so a deleted conversation never comes back, whatever the index still holds.
Pages are offsets into the index's ranking, in a signed token bound to the user, the mode
and the query; a page can hold fewer hits than asked (some left out) and still not be the last.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from parley_core.errors import FieldViolation, RpcError
from svc_history import errors
from svc_history.model import Conversation, Placed, order_key
from svc_history.paging import PageTokens, bad_token
from svc_history.search.documents import Snippet, snippet
from svc_history.search.embedding import Embedder, EmbeddingUnavailableError
from svc_history.search.index import IndexUnavailableError, MessageIndex, Mode
from svc_history.search.ranking import IndexHit
from svc_history.settings import SearchSettings
from svc_history.store import Stores

__all__ = ["Hit", "Search", "SearchPage"]


@dataclass(frozen=True)
class Hit:
    placed: Placed
    conversation_title: str
    snippet: Snippet
    score: float


@dataclass(frozen=True)
class SearchPage:
    hits: list[Hit]
    next_token: str


def search_unavailable(what: str) -> RpcError:
    return RpcError(
        grpc.StatusCode.UNAVAILABLE,
        "SEARCH_UNAVAILABLE",
        f"search is unavailable ({what}); retry shortly. Conversations and chat are not affected",
        domain=errors.DOMAIN,
        metadata={"backend": what},
        retry_after_s=5.0,
    )


class Search:
    def __init__(
        self,
        settings: SearchSettings,
        stores: Stores,
        index: MessageIndex,
        embedder: Embedder,
        tokens: PageTokens,
    ) -> None:
        self._settings = settings
        self._stores = stores
        self._index = index
        self._embedder = embedder
        self._tokens = tokens

    def check_query(self, query: str) -> list[FieldViolation]:
        if not query.strip():
            return [FieldViolation("query", "must not be empty")]
        if len(query) > self._settings.query_chars:
            return [FieldViolation("query", f"must be at most {self._settings.query_chars} characters")]
        return []

    async def search(
        self,
        user_id: str,
        query: str,
        mode: Mode,
        size: int,
        page_token: str,
        *,
        time_left_s: float | None = None,
    ) -> SearchPage:
        """One page; Triton and Weaviate get `call_timeout_s` each, less when the caller's
        deadline (`time_left_s`) is nearer."""
        listing = f"search\n{user_id}\n{mode}\n{hashlib.sha256(query.encode()).hexdigest()}"
        position = self._tokens.read(page_token, listing)
        offset = position.get("offset", 0)
        if not isinstance(offset, int) or not 0 <= offset < self._settings.max_results:
            raise bad_token()
        limit = min(size, self._settings.max_results - offset)
        budget = min(self._settings.call_timeout_s, time_left_s or self._settings.call_timeout_s)
        vector = None
        if mode != "full_text":
            try:
                [vector] = await self._embedder.embed([query], timeout_s=budget)
            except EmbeddingUnavailableError as error:
                raise search_unavailable("embedding model") from error
        try:
            async with asyncio.timeout(budget):
                found = await self._index.search(user_id, mode, query, vector, offset, limit)
        except (IndexUnavailableError, TimeoutError) as error:
            raise search_unavailable("index") from error
        hits = await self.read_back(user_id, query, found)
        end = offset + limit
        more = len(found) == limit and end < self._settings.max_results
        return SearchPage(hits, self._tokens.issue(listing, {"offset": end}) if more else "")

    async def read_back(self, user_id: str, query: str, found: Sequence[IndexHit]) -> list[Hit]:
        """The hits whose conversation and message still exist, in the index's order, as
        stored in Cassandra (SearchMessages' second half; bench/search_bench.py times it alone)."""
        conversation_ids = list(dict.fromkeys(hit.conversation_id for hit in found))
        conversations = await self._stores.conversations.get_many(user_id, conversation_ids)
        placed = await asyncio.gather(
            *(
                self._placed(conversations[c], [h for h in found if h.conversation_id == c])
                for c in conversations
            )
        )
        by_id = {p.message.message_id: p for group in placed for p in group}
        return [
            Hit(
                by_id[hit.message_id],
                conversations[hit.conversation_id].title,
                snippet(hit.text, query),
                hit.score,
            )
            for hit in found
            if hit.message_id in by_id
        ]

    async def _placed(self, conversation: Conversation, hits: Sequence[IndexHit]) -> list[Placed]:
        """The hits' messages of one conversation with their places among their siblings.

        Reads only what the hits need: each one's tree node (where its row is, what it
        follows), each parent's children (the sibling count), then the rows. Not the
        conversation's whole tree: that was most of a search's time (bench/search_bench.py).
        """
        store, conversation_id = self._stores.messages, conversation.conversation_id
        ids = [hit.message_id for hit in hits if _is_uuid(hit.message_id)]
        nodes = [
            n for n in await asyncio.gather(*(store.node(conversation_id, i) for i in ids)) if n is not None
        ]
        parents = list(dict.fromkeys(node.parent_id for node in nodes))
        children = dict(
            zip(
                parents,
                await asyncio.gather(*(store.children(conversation_id, p) for p in parents)),
                strict=True,
            )
        )
        rows = await store.get_many(conversation_id, [(node.bucket, node.message_id) for node in nodes])
        placed = []
        for node in nodes:
            message = rows.get(node.message_id)
            # The tree is the conversation's own, and the conversation the caller's.
            if message is None or message.user_id != conversation.user_id:
                continue
            siblings = sorted(children[node.parent_id], key=order_key)
            index = siblings.index(node.message_id) if node.message_id in siblings else 0
            placed.append(Placed(message, index, max(len(siblings), 1)))
        return placed

    async def close(self) -> None:
        await self._index.close()
        await self._embedder.close()


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True

"""svc_history's Cassandra adapters, one per aggregate: conversations (with their listing
order), messages (rows in bounded buckets and the tree's skeleton), share links, request
ids, and erasures under way.

Every statement runs at LOCAL_QUORUM (parley_core.cassandra.connect), so a read after an
acknowledged write sees it; request-id claims and etag checks are lightweight transactions
at LOCAL_SERIAL. The schema is in `svc_history.store.schema` (versioned migrations).
"""

from __future__ import annotations

from dataclasses import dataclass

from cassandra.cluster import Session as CqlSession

from svc_history.store.conversations import ConversationStore, OrderEntry, entry_of
from svc_history.store.erasures import Erasure, ErasureStore
from svc_history.store.messages import MessageStore
from svc_history.store.reindex_runs import ReindexRun, ReindexRunStore
from svc_history.store.requests import Claim, RequestStore
from svc_history.store.schema import MIGRATIONS
from svc_history.store.share_links import ShareLinkStore

__all__ = [
    "MIGRATIONS",
    "Claim",
    "ConversationStore",
    "Erasure",
    "ErasureStore",
    "MessageStore",
    "OrderEntry",
    "ReindexRun",
    "ReindexRunStore",
    "RequestStore",
    "ShareLinkStore",
    "Stores",
    "entry_of",
]


@dataclass(frozen=True)
class Stores:
    conversations: ConversationStore
    messages: MessageStore
    share_links: ShareLinkStore
    requests: RequestStore
    erasures: ErasureStore
    reindex_runs: ReindexRunStore

    @classmethod
    def open(cls, session: CqlSession, keyspace: str) -> Stores:
        """The adapters of a keyspace the migrations have brought up to date."""
        return cls(
            ConversationStore(session, keyspace),
            MessageStore(session, keyspace),
            ShareLinkStore(session, keyspace),
            RequestStore(session, keyspace),
            ErasureStore(session, keyspace),
            ReindexRunStore(session, keyspace),
        )

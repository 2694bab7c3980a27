"""svc_session's Cassandra adapters, one per aggregate: users, sessions and refresh tokens,
API keys, email proofs with the mail outbox, and signing keys.

Every statement runs at LOCAL_QUORUM; uniqueness and single use (emails, refresh and proof
tokens, idempotent creates) rely on lightweight transactions at LOCAL_SERIAL.
"""

from __future__ import annotations

from dataclasses import dataclass

from cassandra.cluster import Session as CqlSession

from parley_core.cassandra import create_keyspace
from svc_session.store.api_keys import ApiKeyStore
from svc_session.store.keys import SigningKeyStore, StoredKey
from svc_session.store.proofs import MailIntent, Proof, ProofStore
from svc_session.store.sessions import SessionTokenStore
from svc_session.store.users import UserStore

__all__ = [
    "ApiKeyStore",
    "MailIntent",
    "Proof",
    "ProofStore",
    "SessionTokenStore",
    "SigningKeyStore",
    "StoredKey",
    "Stores",
    "UserStore",
]


@dataclass(frozen=True)
class Stores:
    users: UserStore
    sessions: SessionTokenStore
    api_keys: ApiKeyStore
    proofs: ProofStore
    keys: SigningKeyStore

    @classmethod
    def open(cls, session: CqlSession, keyspace: str, replication_factor: int) -> Stores:
        """Create the keyspace, tables and columns if needed (idempotent, blocking)."""
        create_keyspace(session, keyspace, replication_factor)
        kinds = (UserStore, SessionTokenStore, ApiKeyStore, ProofStore, SigningKeyStore)
        for kind in kinds:
            kind.create_schema(session, keyspace)
        return cls(*(kind(session, keyspace) for kind in kinds))  # type: ignore[arg-type]

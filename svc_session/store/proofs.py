"""Email proofs (verification and password reset tokens) and the mail outbox.

A proof is stored only as the SHA-256 digest of its token: the mail carries the only copy.
Rows expire with the token's lifetime, and using one (an LWT) keeps that expiry, so a used
row goes too. The outbox holds mail *intents* (which mail, to whom), never a token: the
relay mints the token when it sends the mail.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from parley_core.cassandra import execute, execute_lwt
from svc_session.store._table import BUCKET, Table, utc


@dataclass(frozen=True)
class Proof:
    kind: str  # "verify_email" or "password_reset"
    user_id: str
    email: str
    used: bool


@dataclass(frozen=True)
class MailIntent:
    message_id: uuid.UUID
    kind: str
    recipient: str
    user_id: str  # "" when the intent names only an address (a reset request)
    lease_until: datetime | None


class ProofStore(Table):
    SCHEMA = (
        """CREATE TABLE IF NOT EXISTS email_proofs (
            token_hash text PRIMARY KEY, kind text, user_id uuid, email text, used boolean)""",
        # Which proofs a user has, so erasure finds them without a scan.
        """CREATE TABLE IF NOT EXISTS email_proofs_by_user (
            user_id uuid, token_hash text, PRIMARY KEY ((user_id), token_hash))""",
        """CREATE TABLE IF NOT EXISTS mail_outbox (
            bucket int, message_id timeuuid, kind text, recipient text, user_id uuid,
            lease_until timestamp, PRIMARY KEY ((bucket), message_id))""",
    )

    async def insert_proof(self, token_hash: str, proof: Proof, ttl_s: int) -> None:
        await execute(
            self._cql,
            await self._q(
                "INSERT INTO {ks}.email_proofs_by_user (user_id, token_hash) VALUES (?, ?) USING TTL ?"
            ),
            (uuid.UUID(proof.user_id), token_hash, ttl_s),
        )
        await execute(
            self._cql,
            await self._q(
                "INSERT INTO {ks}.email_proofs (token_hash, kind, user_id, email, used) "
                "VALUES (?, ?, ?, ?, false) USING TTL ?"
            ),
            (token_hash, proof.kind, uuid.UUID(proof.user_id), proof.email, ttl_s),
        )

    async def use_proof(self, token_hash: str, kind: str, ttl_s: int) -> Proof | None:
        """Mark an unused proof of this kind used; the proof when this call used it."""
        rows = await execute(
            self._cql, await self._q("SELECT * FROM {ks}.email_proofs WHERE token_hash = ?"), (token_hash,)
        )
        if not rows or rows[0].kind != kind or rows[0].used or rows[0].user_id is None:
            return None
        row = rows[0]
        used = await execute_lwt(
            self._cql,
            await self._q(
                "UPDATE {ks}.email_proofs USING TTL ? SET used = true WHERE token_hash = ? IF used = false"
            ),
            (ttl_s, token_hash),
        )
        return Proof(row.kind, str(row.user_id), row.email or "", True) if used else None

    async def used_ttl(self, token_hash: str) -> int | None:
        """Seconds until a proof's `used` cell expires (None: it never does). For tests."""
        rows = await execute(
            self._cql,
            await self._q("SELECT TTL(used) AS ttl FROM {ks}.email_proofs WHERE token_hash = ?"),
            (token_hash,),
        )
        return rows[0].ttl if rows else None

    # The outbox -----------------------------------------------------------------------

    async def enqueue(self, kind: str, recipient: str, user_id: str, ttl_s: int) -> uuid.UUID:
        message_id = uuid.uuid1()
        await execute(
            self._cql,
            await self._q(
                "INSERT INTO {ks}.mail_outbox (bucket, message_id, kind, recipient, user_id) "
                "VALUES (?, ?, ?, ?, ?) USING TTL ?"
            ),
            (BUCKET, message_id, kind, recipient, uuid.UUID(user_id) if user_id else None, ttl_s),
        )
        return message_id

    async def pending(self, limit: int = 100) -> list[MailIntent]:
        rows = await execute(
            self._cql,
            await self._q(
                "SELECT message_id, kind, recipient, user_id, lease_until FROM {ks}.mail_outbox "
                "WHERE bucket = ? LIMIT ?"
            ),
            (BUCKET, limit),
        )
        return [
            MailIntent(
                r.message_id, r.kind or "", r.recipient or "", str(r.user_id or ""), utc(r.lease_until)
            )
            for r in rows
            if r.kind
        ]

    async def lease(self, intent: MailIntent, until: datetime) -> bool:
        """Take the intent for this relay until `until`; False when another relay has it."""
        return await execute_lwt(
            self._cql,
            # The TTL lets a lease on an intent that another relay just finished (which
            # the condition creates as a row of its own) disappear.
            await self._q(
                "UPDATE {ks}.mail_outbox USING TTL 3600 SET lease_until = ? WHERE bucket = ? "
                "AND message_id = ? IF lease_until = ?"
            ),
            (until, BUCKET, intent.message_id, intent.lease_until),
        )

    async def done(self, message_id: uuid.UUID) -> None:
        await execute(
            self._cql,
            await self._q("DELETE FROM {ks}.mail_outbox WHERE bucket = ? AND message_id = ?"),
            (BUCKET, message_id),
        )

    async def erase_user(self, user_id: str, email: str) -> int:
        """Delete a user's proofs and queued mail; returns how many rows went."""
        key = uuid.UUID(user_id)
        hashes = await execute(
            self._cql,
            await self._q("SELECT token_hash FROM {ks}.email_proofs_by_user WHERE user_id = ?"),
            (key,),
        )
        for row in hashes:
            await execute(
                self._cql,
                await self._q("DELETE FROM {ks}.email_proofs WHERE token_hash = ?"),
                (row.token_hash,),
            )
        await execute(
            self._cql, await self._q("DELETE FROM {ks}.email_proofs_by_user WHERE user_id = ?"), (key,)
        )
        queued = [
            i
            for i in await self.pending(limit=10_000)
            if i.user_id == user_id or (email and i.recipient == email)
        ]
        for intent in queued:
            await self.done(intent.message_id)
        return len(hashes) + len(queued)

"""Outgoing mail through an outbox: written to Cassandra, then delivered.

A mail is stored before delivery is attempted, so a crash never loses a reset mail; the
relay delivers what is pending and removes it. In development the relay writes each mail
as a file in the dev mailbox (`PARLEY_SESSION_DEV_MAILBOX_DIR`); without one configured,
mails wait in the outbox for a production relay. Mail bodies are never logged.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import structlog

from svc_session.store import SessionStore

_log = structlog.get_logger("svc_session.mail")


class Mailer:
    def __init__(self, store: SessionStore, dev_mailbox: Path | None) -> None:
        self._store = store
        self._dev_mailbox = dev_mailbox
        self._lock = asyncio.Lock()

    async def send(self, recipient: str, subject: str, body: str) -> None:
        await self._store.enqueue_mail(recipient, subject, body)
        await self.deliver_pending()

    async def deliver_pending(self) -> int:
        """Deliver what the outbox holds (to the dev mailbox); returns how many were sent."""
        if self._dev_mailbox is None:
            return 0
        async with self._lock:
            sent = 0
            for message_id, recipient, subject, body in await self._store.pending_mail():
                folder = self._dev_mailbox / _safe(recipient)
                folder.mkdir(parents=True, exist_ok=True)
                mail = {"to": recipient, "subject": subject, "body": body, "id": str(message_id)}
                (folder / f"{message_id}.json").write_text(json.dumps(mail))
                await self._store.mark_mail_sent(message_id)
                sent += 1
            if sent:
                _log.info("mail delivered to the dev mailbox", count=sent)
            return sent


def _safe(recipient: str) -> str:
    return "".join(c if c.isalnum() or c in "@._-" else "_" for c in recipient)[:200]

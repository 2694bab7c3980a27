"""The outbox relay: turns mail intents into mail and hands them to a transport.

Requests only write intents (svc_session.email_proofs); the relay runs beside the server,
woken when this process queued something and every `mail_poll_s` for what other replicas
queued. Each intent is leased with an LWT before it is worked on, so two replicas never
send the same mail, and one that crashes mid-way leaves it to another after the lease.
A crash after sending but before the intent is removed sends a second mail with a second
token: at least once, never lost.

In development the transport writes each mail as a JSON file in the dev mailbox
(`PARLEY_SESSION_DEV_MAILBOX_DIR`); without a transport the relay does not run and intents
wait for a production relay. Mail bodies are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import structlog

from svc_session.email_proofs import EmailProofs, Mail
from svc_session.model import now
from svc_session.store import ProofStore

_log = structlog.get_logger("svc_session.mail")


class MailTransport(Protocol):
    async def deliver(self, mail: Mail, message_id: str) -> None: ...


class DevMailbox:
    """Delivers mail as files: `<folder>/<recipient>/<message id>.json`."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    async def deliver(self, mail: Mail, message_id: str) -> None:
        await asyncio.to_thread(self._write, mail, message_id)

    def _write(self, mail: Mail, message_id: str) -> None:
        folder = self._folder / _safe(mail.recipient)
        folder.mkdir(parents=True, exist_ok=True)
        document = {"to": mail.recipient, "subject": mail.subject, "body": mail.body, "id": message_id}
        temporary = folder / f".{message_id}.tmp"
        temporary.write_text(json.dumps(document))
        temporary.rename(folder / f"{message_id}.json")  # readers never see half a mail


class MailRelay:
    def __init__(
        self,
        proofs: EmailProofs,
        store: ProofStore,
        transport: MailTransport,
        *,
        poll_s: float,
        lease_s: float = 60.0,
    ) -> None:
        self._proofs = proofs
        self._store = store
        self._transport = transport
        self._poll_s = poll_s
        self._lease = timedelta(seconds=lease_s)
        self._wake = proofs.queued
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mail-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.deliver_pending()
            except Exception as error:  # a down Cassandra: try again at the next poll
                _log.warning("mail relay failed; retrying", error=type(error).__name__)

    async def deliver_pending(self) -> int:
        """Send what the outbox holds; returns how many mails were sent."""
        sent = 0
        for intent in await self._store.pending():
            moment = now()
            if intent.lease_until is not None and intent.lease_until > moment:
                continue  # another relay is on it
            if not await self._store.lease(intent, moment + self._lease):
                continue
            mail = await self._proofs.compose(intent)
            if mail is not None:
                await self._transport.deliver(mail, str(intent.message_id))
                sent += 1
            await self._store.done(intent.message_id)
        if sent:
            _log.info("mail delivered", count=sent)
        return sent


def _safe(recipient: str) -> str:
    return "".join(c if c.isalnum() or c in "@._-" else "_" for c in recipient)[:200]

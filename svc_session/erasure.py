"""Erasing an account when its owner asks history to delete everything (docs/adr/0009).

svc_history's DeleteUserData publishes `UserDeleted`; svc_session consumes it and removes
every row it holds of the user: the account, its email claim and directory entry,
sessions, refresh tokens, API keys (and their digest lookups and request ids), email
proofs and queued mail. Access ends first: every session and key is revoked in the shared
revocation state, so no token of the user works while the rows go. The erasure is
idempotent and resumable: a redelivered event, or one that arrives after a crash half-way,
finds what is left and removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import pulsar
import structlog

from parley.events.v1 import events_pb2
from parley_core.events import USER_DELETED, topic_url
from svc_session.sessions import Sessions
from svc_session.store import Stores

_log = structlog.get_logger("svc_session.erasure")


@dataclass(frozen=True)
class ErasedAccount:
    sessions_and_tokens: int
    api_keys: int
    proofs_and_mail: int


class AccountErasure:
    def __init__(self, stores: Stores, sessions: Sessions) -> None:
        self._stores = stores
        self._sessions = sessions

    async def erase(self, user_id: str) -> ErasedAccount:
        stores = self._stores
        user = await stores.users.get(user_id)
        email = user.email if user is not None else ""
        for session in await stores.sessions.list_sessions(user_id):
            await self._sessions.revoke(user_id, session.session_id)
        for key in await stores.api_keys.list(user_id):
            await self._sessions.revoke_tokens_of_key(key.key_id)
        proofs = await stores.proofs.erase_user(user_id, email)
        keys = await stores.api_keys.erase_user(user_id)
        sessions = await stores.sessions.erase_user(user_id)
        await stores.users.erase(user_id, email)
        _log.info("account erased", user_id=user_id)
        return ErasedAccount(sessions, keys, proofs)


class UserDeletedConsumer:
    """Follows the `user-deleted` topic and erases each account it names.

    A shared subscription (one per keyspace: the accounts it erases), so svc_session's
    replicas split the work; an event is
    acknowledged after the erasure, negatively acknowledged (redelivered later) when it
    failed, and acknowledged with a warning when it cannot be decoded (it never will be).
    """

    def __init__(
        self,
        service_url: str,
        erasure: AccountErasure,
        subscription: str,
        *,
        client_factory: Callable[[str], pulsar.Client] | None = None,
    ) -> None:
        self._url = service_url
        self._erasure = erasure
        self._subscription = subscription
        self._factory = client_factory or (
            lambda url: pulsar.Client(url, operation_timeout_seconds=10, logger=_quiet())
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="user-deleted-consumer")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        delay = 0.5
        while not self._stopping:
            client: pulsar.Client | None = None
            try:
                client = self._factory(self._url)
                consumer = await asyncio.to_thread(
                    client.subscribe,
                    topic_url(USER_DELETED),
                    self._subscription,
                    consumer_type=pulsar.ConsumerType.Shared,
                    negative_ack_redelivery_delay_ms=2000,
                )
                delay = 0.5
                while not self._stopping:
                    await self._next(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                _log.warning("user-deleted consumer lost pulsar; retrying", error=type(error).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(client.close)

    async def _next(self, consumer: pulsar.Consumer) -> None:
        try:
            message = await asyncio.to_thread(consumer.receive, 1000)
        except pulsar.Timeout:
            return
        try:
            event = events_pb2.UserDeleted.FromString(message.data())
            user_id = event.user.removeprefix("users/")
            if not event.user.startswith("users/") or not user_id:
                raise ValueError("no user in the event")
        except Exception as error:  # never decodable: drop it, loudly
            _log.warning("undecodable user-deleted event dropped", error=type(error).__name__)
            consumer.acknowledge(message)
            return
        try:
            await self._erasure.erase(user_id)
        except Exception as error:
            _log.warning("erasure failed; will retry", user_id=user_id, error=type(error).__name__)
            consumer.negative_acknowledge(message)
            return
        consumer.acknowledge(message)


def _quiet() -> pulsar.ConsoleLogger:
    return pulsar.ConsoleLogger(pulsar.LoggerLevel.Error)

"""Erasure everywhere: each service that holds a user's data follows `user-deleted`.

svc_history's DeleteUserData publishes `UserDeleted`; every other service that keeps
something of the user (svc_session's account, svc_router's turn logs) consumes it with
`UserDeletedConsumer` and removes what it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pulsar
import pulsar.asyncio
import structlog

from parley.events.v1 import events_pb2
from parley_core.events import USER_DELETED, topic_url

__all__ = ["UserDeletedConsumer"]

_log = structlog.get_logger("parley.erasure")


class UserDeletedConsumer:
    """Follows the `user-deleted` topic and calls `erase(user_id)` for each user it names.

    A shared subscription (one per service and store: what it erases), so a service's
    replicas split the work; an event is acknowledged after the erasure, negatively
    acknowledged (redelivered later) when it failed, and acknowledged with a warning when
    it cannot be decoded (it never will be). `erase` must be idempotent: an event may come
    twice.
    """

    def __init__(
        self,
        service_url: str,
        erase: Callable[[str], Awaitable[object]],
        subscription: str,
        *,
        client_factory: Callable[[str], pulsar.asyncio.Client] | None = None,
    ) -> None:
        self._url = service_url
        self._erase = erase
        self._subscription = subscription
        # pulsar's asyncio client: no thread blocks on a broker that is gone, so stopping
        # never waits for one.
        self._factory = client_factory or (
            lambda url: pulsar.asyncio.Client(url, operation_timeout_seconds=10, logger=_quiet())
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="user-deleted-consumer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        delay = 0.5
        while True:
            client = self._factory(self._url)
            try:
                consumer = await client.subscribe(
                    topic_url(USER_DELETED),
                    self._subscription,
                    consumer_type=pulsar.ConsumerType.Shared,
                    negative_ack_redelivery_delay_ms=2000,
                )
                delay = 0.5
                while True:
                    await self._handle(consumer, await consumer.receive())
            except asyncio.CancelledError:
                raise
            except Exception as error:
                _log.warning("user-deleted consumer lost pulsar; retrying", error=type(error).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close(), 5)

    async def _handle(self, consumer: pulsar.asyncio.Consumer, message: pulsar.Message) -> None:
        try:
            event = events_pb2.UserDeleted.FromString(message.data())
            user_id = event.user.removeprefix("users/")
            if not event.user.startswith("users/") or not user_id:
                raise ValueError("no user in the event")
        except Exception as error:  # never decodable: drop it, loudly
            _log.warning("undecodable user-deleted event dropped", error=type(error).__name__)
            await consumer.acknowledge(message)
            return
        try:
            await self._erase(user_id)
        except Exception as error:
            _log.warning("erasure failed; will retry", user_id=user_id, error=type(error).__name__)
            await consumer.negative_acknowledge(message)
            return
        await consumer.acknowledge(message)


def _quiet() -> pulsar.ConsoleLogger:
    return pulsar.ConsoleLogger(pulsar.LoggerLevel.Error)

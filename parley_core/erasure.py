"""Erasure everywhere: each service that holds a user's data follows `user-deleted`.

svc_history's DeleteUserData publishes `UserDeleted`; every other service that keeps
something of the user (svc_session's account, svc_router's turn logs) consumes it with
`UserDeletedConsumer` and removes what it holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import pulsar
import pulsar.asyncio
import structlog

from parley.events.v1 import events_pb2
from parley_core.consuming import Batches, Handler
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
        self._erase = erase
        self._subscription = subscription
        self._batches = Batches(
            service_url, self._subscribe, 16, name="user-deleted-consumer", client_factory=client_factory
        )

    def start(self) -> None:
        self._batches.start()

    async def stop(self) -> None:
        await self._batches.stop()

    async def _subscribe(self, client: pulsar.asyncio.Client) -> tuple[pulsar.asyncio.Consumer, Handler]:
        consumer = await client.subscribe(
            topic_url(USER_DELETED),
            self._subscription,
            consumer_type=pulsar.ConsumerType.Shared,
            negative_ack_redelivery_delay_ms=2000,
        )

        async def handle(batch: Sequence[pulsar.Message]) -> None:
            for message in batch:
                await self._handle(consumer, message)

        return consumer, handle

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

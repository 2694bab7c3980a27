"""Following a Pulsar subscription in batches: the loop the ledger's usage consumer and the
search indexer share.

`Batches` subscribes (through the caller's `subscribe`, which also makes whatever else the
caller needs on that client, a dead-letter producer say), then hands each batch to the
handler it got back: the first message that arrives and what else has arrived meanwhile,
up to `batch_size`. A receiving task keeps a bounded queue filled while a batch is handled.
When the broker is lost, the client is closed and everything subscribed again after a delay
doubling from 0.5 s to 30 s; the broker redelivers what was not acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence

import pulsar
import pulsar.asyncio
import structlog

__all__ = ["Batches", "Handler", "Subscribe", "initial_position", "pulsar_client"]

_log = structlog.get_logger("parley.consuming")

#: Handles one batch; acknowledging is its business.
Handler = Callable[[Sequence[pulsar.Message]], Awaitable[None]]
#: Subscribes on a fresh client: the consumer to receive from, and the batch handler.
Subscribe = Callable[[pulsar.asyncio.Client], Awaitable[tuple[pulsar.asyncio.Consumer, Handler]]]


def initial_position(subscribe_from: str) -> pulsar.InitialPosition:
    """Where a new subscription starts: "earliest" (the topic's retained start) or "latest"."""
    return pulsar.InitialPosition.Earliest if subscribe_from == "earliest" else pulsar.InitialPosition.Latest


def pulsar_client(url: str) -> pulsar.asyncio.Client:
    """pulsar's asyncio client: no thread blocks on a broker that is gone, so stopping never
    waits for one."""
    return pulsar.asyncio.Client(
        url, operation_timeout_seconds=10, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error)
    )


class Batches:
    def __init__(
        self,
        url: str,
        subscribe: Subscribe,
        batch_size: int,
        *,
        name: str,
        client_factory: Callable[[str], pulsar.asyncio.Client] | None = None,
    ) -> None:
        self._url = url
        self._subscribe = subscribe
        self._batch_size = batch_size
        self._name = name
        self._factory = client_factory or pulsar_client
        self._queue: asyncio.Queue[pulsar.Message] = asyncio.Queue(batch_size * 2)
        #: The batch being handled.
        self._batch: list[pulsar.Message] = []
        self._task: asyncio.Task[None] | None = None
        #: Set while the subscription is held.
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def held(self) -> int:
        """Messages received and not yet handled to the end (queued, or in the batch)."""
        return self._queue.qsize() + len(self._batch)

    def oldest_held_s(self) -> float:
        """How long ago the oldest message of the batch being handled was published; 0 with
        none (the queue's are newer: the broker delivers in order)."""
        if not self._batch:
            return 0.0
        oldest_ms: int = min(message.publish_timestamp() for message in self._batch)
        return max(0.0, time.time() - oldest_ms / 1000)

    async def _run(self) -> None:
        delay = 0.5
        while True:
            client = self._factory(self._url)
            receiver: asyncio.Task[None] | None = None
            try:
                consumer, handle = await self._subscribe(client)
                self.subscribed.set()
                delay = 0.5
                receiver = asyncio.create_task(self._receive(consumer), name=f"{self._name}-receiver")
                while True:
                    self._batch = [await self._next(receiver)]
                    while not self._queue.empty() and len(self._batch) < self._batch_size:
                        self._batch.append(self._queue.get_nowait())
                    await handle(self._batch)
                    self._batch = []
            except asyncio.CancelledError:
                raise
            except Exception as error:
                _log.warning(
                    "lost pulsar; subscribing again", consumer=self._name, error=type(error).__name__
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            finally:
                self.subscribed.clear()
                self._batch = []
                while not self._queue.empty():
                    self._queue.get_nowait()  # the broker redelivers what was not acknowledged
                if receiver is not None:
                    receiver.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close(), 5)

    async def _receive(self, consumer: pulsar.asyncio.Consumer) -> None:
        while True:
            await self._queue.put(await consumer.receive())

    async def _next(self, receiver: asyncio.Task[None]) -> pulsar.Message:
        """The next message; the receiver's error if it stopped (then everything reconnects)."""
        while True:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(self._queue.get(), 1.0)
            if receiver.done():
                receiver.result()
                raise RuntimeError(f"the {self._name} receiver stopped")

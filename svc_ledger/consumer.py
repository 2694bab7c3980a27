"""The `usage` topic into the ledger: a Key_Shared subscription, batches, retries, dead letters.

- One subscription (`ledger`) shared by every ledger instance as Key_Shared: the message
  key is the user id, so one user's events go to one instance, in order, and several
  instances split the users between them.
- Batches come from `parley_core.consuming.Batches` (what has arrived, up to
  `batch_size`); each is priced and recorded (svc_ledger.accounts), then acknowledges. Nothing is
  acknowledged before it is written, so a consumer that dies (even by SIGKILL) loses
  nothing: the broker redelivers what it had not acknowledged, and a redelivered event
  adds nothing a second time.
- A batch that fails (Cassandra or Redis unreachable) is negatively acknowledged after a
  backoff that doubles with each redelivery (`retry_base_s` .. `retry_max_s`), and lands
  in the dead-letter topic after `max_redeliveries`.
- A poison event (svc_ledger.billing.PoisonEventError) is published to the dead-letter
  topic at once, with its reason, and acknowledged: it would never succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pulsar
import pulsar.asyncio
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from parley_core.consuming import Batches, Handler, initial_position
from parley_core.events import USAGE, topic_url
from parley_core.tracing import event_spans
from svc_ledger.accounts import Accounts
from svc_ledger.billing import PoisonEventError, Priced, price_event
from svc_ledger.pricing import PriceBook
from svc_ledger.settings import LedgerSettings
from svc_ledger.store import LineItemRow

_log = structlog.get_logger("svc_ledger.consumer")

#: Where events that cannot be priced go.
DEAD_LETTER = f"{USAGE}-dead-letter"


class UsageMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "parley_ledger_events_total",
            "Usage events handled, by outcome (priced, duplicate, dead_letter, retried).",
            ["outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "parley_ledger_dead_letters_total",
            "Usage events sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.estimated = Counter(
            "parley_ledger_estimated_line_items_total",
            "Line items billed from the router's estimate because the model reported no usage.",
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "parley_ledger_batch_seconds",
            "Time to price and record one batch of events.",
            registry=registry,
        )
        self.spend = Counter(
            "parley_ledger_spend_micros",
            "Money billed: the cost of each line item written (a replayed event adds nothing), "
            "in micro-units of its currency, by model, tier and currency.",
            ["model", "tier", "currency"],
            registry=registry,
        )
        self.lag_events = Gauge(
            "parley_ledger_consumer_lag_events",
            "Usage events this instance has received and not yet recorded.",
            registry=registry,
        )
        self.lag_seconds = Gauge(
            "parley_ledger_consumer_lag_seconds",
            "Age of the oldest usage event this instance holds unrecorded (0 when it holds none).",
            registry=registry,
        )

    def written(self, items: Sequence[LineItemRow]) -> None:
        """Line items just written: counted as priced, their cost as spend."""
        self.events.labels("priced").inc(len(items))
        for item in items:
            self.spend.labels(item.model, item.tier, item.currency).inc(item.cost_micros)


class UsageConsumer:
    def __init__(
        self,
        settings: LedgerSettings,
        prices: PriceBook,
        accounts: Accounts,
        metrics: UsageMetrics,
        *,
        client_factory: Callable[[str], pulsar.asyncio.Client] | None = None,
    ) -> None:
        self._settings = settings
        self._prices = prices
        self._accounts = accounts
        self.metrics = metrics
        self._batches = Batches(
            settings.pulsar_url, self._subscribe, settings.batch_size, name="usage-consumer",
            client_factory=client_factory,
        )  # fmt: skip
        metrics.lag_events.set_function(self._batches.held)
        metrics.lag_seconds.set_function(self._batches.oldest_held_s)
        self._retries: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._batches.start()

    async def stop(self) -> None:
        await self._batches.stop()
        for task in list(self._retries):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def subscribed(self) -> asyncio.Event:
        """Set while the consumer holds its subscription."""
        return self._batches.subscribed

    async def _subscribe(self, client: pulsar.asyncio.Client) -> tuple[pulsar.asyncio.Consumer, Handler]:
        consumer = await client.subscribe(
            topic_url(USAGE),
            self._settings.subscription,
            consumer_type=pulsar.ConsumerType.KeyShared,
            initial_position=initial_position(self._settings.subscribe_from),
            receiver_queue_size=self._settings.batch_size * 2,
            negative_ack_redelivery_delay_ms=int(self._settings.retry_base_s * 1000),
            dead_letter_policy=pulsar.ConsumerDeadLetterPolicy(
                max_redeliver_count=self._settings.max_redeliveries,
                dead_letter_topic=topic_url(DEAD_LETTER),
            ),
        )
        dead_letters = await client.create_producer(topic_url(DEAD_LETTER))
        self._accounts.forget_cached()
        return consumer, functools.partial(self._handle, consumer, dead_letters)

    async def _handle(
        self,
        consumer: pulsar.asyncio.Consumer,
        dead_letters: pulsar.asyncio.Producer,
        batch: Sequence[pulsar.Message],
    ) -> None:
        started = time.perf_counter()
        started_ns = time.time_ns()
        now = datetime.now(UTC)
        priced: list[tuple[pulsar.Message, Priced]] = []
        for message in batch:
            try:
                priced.append((message, price_event(message.data(), self._prices, now)))
            except PoisonEventError as poison:
                await self._dead_letter(consumer, dead_letters, message, poison)
        if not priced:
            return
        try:
            recorded = await self._accounts.record([p for _, p in priced])
        except Exception as error:
            _log.warning("recording usage failed; will retry", error=type(error).__name__, events=len(priced))
            self.metrics.events.labels("retried").inc(len(priced))
            for message, _ in priced:
                self._retry_later(consumer, message)
            event_spans("usage record", (m.properties() for m, _ in priced), started_ns, outcome="retried")
            return
        # Line items written were counted as "priced" when written (svc_ledger.accounts).
        self.metrics.events.labels("duplicate").inc(recorded.duplicates)
        self.metrics.estimated.inc(sum(1 for _, p in priced if p.item.estimated))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        event_spans("usage record", (m.properties() for m, _ in priced), started_ns)
        # Acknowledgements are grouped by the client; awaiting them one by one would wait
        # for a flush each.
        await asyncio.gather(*(consumer.acknowledge(message) for message, _ in priced))

    async def _dead_letter(
        self,
        consumer: pulsar.asyncio.Consumer,
        dead_letters: pulsar.asyncio.Producer,
        message: pulsar.Message,
        poison: PoisonEventError,
    ) -> None:
        _log.warning(
            "poison usage event to the dead-letter topic", reason=poison.reason, detail=poison.detail
        )
        await dead_letters.send(
            message.data(),
            properties={
                **message.properties(),
                "reason": poison.reason,
                "detail": poison.detail[:200],
                "subscription": self._settings.subscription,
            },
            partition_key=message.partition_key() or None,
        )
        await consumer.acknowledge(message)
        self.metrics.dead_letters.labels(poison.reason).inc()
        self.metrics.events.labels("dead_letter").inc()

    def _retry_later(self, consumer: pulsar.asyncio.Consumer, message: pulsar.Message) -> None:
        """Negatively acknowledge after a backoff that doubles with each redelivery."""
        wait = min(self._settings.retry_base_s * 2 ** message.redelivery_count(), self._settings.retry_max_s)

        async def later() -> None:
            await asyncio.sleep(max(0.0, wait - self._settings.retry_base_s))
            with contextlib.suppress(Exception):  # a closed consumer: the broker redelivers anyway
                await consumer.negative_acknowledge(message)

        task = asyncio.create_task(later())
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

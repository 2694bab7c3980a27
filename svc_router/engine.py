"""The turn engine: one chat turn from the user's message to the stored, billed answer.

Both streaming forms of the API (Chat and StreamTurn) and ResumeTurn drive this one engine:
`begin` admits and starts a turn, `follow` streams its events from any sequence number,
`cancel` ends it. A turn runs as a task of its own, apart from the streams that read it,
so a slow or vanished client never holds up the model (docs/adr/0011-chat-turn.md).

The order of a turn: admit (Redis, one round trip) -> reserve its largest cost on its
budgets (Redis, one round trip) -> create the conversation if the turn starts one -> store
the user message (idempotent by the client's key) -> read the active path and fit it to the
model's context window -> stream from the first backend that sends a first token -> store the
answer with its usage and state -> add TurnCompleted to the outbox (the ledger settles the
reservation when it prices it) -> log TurnCompleted. A turn that ends before its usage event
is written gives its reservation back. Every event reaches a client only after it is in the
turn log, so a client that resumes on another router after this one died never sees a
sequence number twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

import grpc
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from parley_core.auth import Principal
from parley_core.catalog import Catalog, CatalogModel
from parley_core.errors import FieldViolation, RpcError, invalid_argument
from svc_router.admission import Admission
from svc_router.backends import BackendError, ChatMessage, Finish, Generation, Piece
from svc_router.budget import TurnBudgets
from svc_router.events import UsageEvents
from svc_router.history import ConversationInfo, HistoryClient, PathMessage
from svc_router.settings import RouterSettings
from svc_router.turn_log import SequenceTakenError, TurnLog
from svc_router.turns import (
    BudgetWarning,
    Completed,
    Delta,
    FinishReason,
    Started,
    TurnEvent,
    TurnName,
    TurnRecord,
    derived_id,
    time_ordered_id,
)

_log = structlog.get_logger("svc_router.turns")

#: How long an idempotency key names a turn that is still being stored (then the full TTL).
_STARTING_CLAIM_S = 30

#: Refusals from svc_history that a retry cannot change.
_FINAL_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)

#: The longest one XREAD of a follower blocks before it looks at the turn's lease again.
_FOLLOW_BLOCK_MS = 1000


@dataclass(frozen=True)
class Caller:
    """Who starts or reads a turn: the verified principal and the token it came with."""

    principal: Principal
    #: The caller's access token, passed to svc_history beside the service token.
    token: str


@dataclass(frozen=True)
class TurnRequest:
    """TurnInput, validated for shape by the servicer."""

    conversation: str
    text: str
    parent_message: str
    model: str
    idempotency_key: str
    regenerate: bool
    #: The user message has no parent: the conversation starts over (an edit of its first).
    branch_from_start: bool = False


@dataclass(frozen=True)
class Prompt:
    """The context a model reads, fitted to its window."""

    messages: tuple[ChatMessage, ...]
    prompt_tokens: int
    max_tokens: int
    dropped: int


class PromptBuilder(Protocol):
    async def build(self, model: CatalogModel, system_prompt: str, path: Sequence[ChatMessage]) -> Prompt:
        """The messages to send, newest kept, trimmed to the model's context window."""
        ...

    async def check(self, model: CatalogModel, system_prompt: str, text: str) -> None:
        """INVALID_ARGUMENT when a message this long can never fit the model's window."""
        ...


class RoutedStream(Protocol):
    @property
    def model(self) -> CatalogModel: ...
    @property
    def backend(self) -> str: ...
    @property
    def first(self) -> Piece | Finish: ...
    def __aiter__(self) -> AsyncIterator[Piece | Finish]: ...
    async def aclose(self) -> None: ...


class Routes(Protocol):
    async def open(self, model: CatalogModel, generation: Generation) -> RoutedStream: ...


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _cost(model: CatalogModel, input_tokens: int, output_tokens: int) -> tuple[int, str]:
    """The router's estimate of what the tokens cost now, in micro-units, and the currency."""
    price = model.price_at(datetime.now(UTC))
    return price.cost_micros(input_tokens, output_tokens), price.currency


@dataclass
class _Running:
    """A turn this router runs: its events, and what wakes the streams that read them."""

    record: TurnRecord
    caller: Caller
    model: CatalogModel
    events: list[TurnEvent] = field(default_factory=list)
    #: Events [0, logged) are in the turn log and may go to clients.
    logged: int = 0
    wake: asyncio.Future[None] | None = None
    #: Told of every new event (the engine's log writer).
    on_emit: Callable[[_Running], None] = field(default=lambda turn: None)
    #: Another router closed the turn (it thought this one dead): nothing more is logged.
    log_closed: bool = False
    followers: int = 0
    generation: asyncio.Task[None] | None = None
    task: asyncio.Task[None] | None = None
    #: Why the generation was stopped: "cancelled", "abandoned" or "shutdown".
    stop_reason: str = ""
    done: bool = False
    #: When the request arrived (the engine's clock), for time to first token.
    arrived: float = 0.0
    writer_done: bool = False
    #: The usage event is in the outbox: the ledger settles the turn's budget reservation.
    usage_written: bool = False

    def emit(self, kind: Started | Delta | Completed) -> TurnEvent:
        event = TurnEvent(sequence=len(self.events) + 1, time_ms=_now_ms(), kind=kind)
        self.events.append(event)
        self.on_emit(self)
        return event

    def woken(self) -> asyncio.Future[None]:
        if self.wake is None or self.wake.done():
            self.wake = asyncio.get_running_loop().create_future()
        return self.wake

    def mark_logged(self, count: int) -> None:
        self.logged = count
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        buckets = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
        self.ttft = Histogram(
            "parley_turn_ttft_seconds",
            "From a turn's request to its first delta, by model.",
            ["model"],
            buckets=buckets,
            registry=registry,
        )
        self.added_ttft = Histogram(
            "parley_turn_added_ttft_seconds",
            "Time to first token the platform adds: the turn's TTFT less the backend's own.",
            ["model"],
            buckets=buckets,
            registry=registry,
        )
        self.inter_token = Histogram(
            "parley_turn_inter_token_seconds",
            "Gap between two pieces of one answer as the router receives them from the backend, by model.",
            ["model"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.streams = Gauge(
            "parley_router_active_streams",
            "Client streams following a turn on this router (StreamTurn, a Chat stream's turn, ResumeTurn).",
            registry=registry,
        )
        self.running = Gauge(
            "parley_router_running_turns", "Turns this router is generating now.", registry=registry
        )
        self.turns = Counter(
            "parley_turns",
            "Turns ended, by model and finish reason.",
            ["model", "finish_reason"],
            registry=registry,
        )
        self.tokens = Counter(
            "parley_turn_tokens", "Tokens read and written, by model.", ["model", "kind"], registry=registry
        )


class TurnEngine:
    def __init__(
        self,
        settings: RouterSettings,
        catalog: Catalog,
        routes: Routes,
        prompts: PromptBuilder,
        history: HistoryClient,
        log: TurnLog,
        admission: Admission,
        budgets: TurnBudgets,
        usage: UsageEvents,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._catalog = catalog
        self._routes = routes
        self._prompts = prompts
        self._history = history
        self._log = log
        self._admission = admission
        self._budgets = budgets
        self._usage = usage
        self._clock = clock
        self._metrics = _Metrics(registry if registry is not None else CollectorRegistry())
        #: This process, as turn leases name it.
        self.instance = f"router-{uuid.uuid4().hex[:12]}"
        self._running: dict[str, _Running] = {}
        self._metrics.running.set_function(lambda: len(self._running))
        self._background: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        #: Turns with events not yet in the log, for the writer.
        self._dirty: dict[str, _Running] = {}
        self._dirty_signal = asyncio.Event()

    # Lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen_for_cancels(), name="turn-cancels")
        self._writer = asyncio.create_task(self._write_logs(), name="turn-log-writer")

    async def close(self, *, finish_s: float = 0.0) -> None:
        """Stop: running turns get up to finish_s to end by themselves, then the rest end as
        failed (ROUTER_STOPPED) with what they generated."""
        finishing = [t.task for t in self._running.values() if t.task is not None]
        if finishing and finish_s > 0:
            await asyncio.wait(finishing, timeout=finish_s)
        for turn in list(self._running.values()):
            self._stop(turn, "shutdown")
        tasks = [t.task for t in self._running.values() if t.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=self._settings.shutdown_grace_s)
        for task in (self._listener, self._writer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for task in list(self._background):
            task.cancel()

    def _spawn(self, coroutine: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine, name=name)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _listen_for_cancels(self) -> None:
        while True:
            try:
                async for turn_id in self._log.cancels():
                    turn = self._running.get(turn_id)
                    if turn is not None:
                        self._stop(turn, "cancelled")
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Redis went away: listen again shortly
                _log.warning("cancel listener failed", error_type=type(error).__name__)
                await asyncio.sleep(1.0)

    # Begin ----------------------------------------------------------------------------

    def _model(self, name: str, tier: str) -> CatalogModel:
        short = name.removeprefix("models/")
        try:
            model = self._catalog.model(short)
        except LookupError:
            raise invalid_argument(
                [FieldViolation("input.model", f"{name!r} is not a model of the catalog (see ListModels)")]
            ) from None
        if not model.available_to(tier):
            raise RpcError(
                grpc.StatusCode.PERMISSION_DENIED,
                "MODEL_NOT_IN_TIER",
                f"models/{model.name} is not available to tier {tier!r}",
                metadata={"model": f"models/{model.name}", "tier": tier},
            )
        return model

    def _conversation_of(self, caller: Caller, name: str) -> str:
        """The id in a conversation name the caller owns (another user's: PERMISSION_DENIED)."""
        parts = name.split("/")
        if len(parts) != 4 or parts[0] != "users" or parts[2] != "conversations" or not parts[3]:
            raise invalid_argument(
                [
                    FieldViolation(
                        "input.conversation", "must look like users/{user}/conversations/{conversation}"
                    )
                ]
            )
        if parts[1] not in (caller.principal.user_id, "me"):
            raise RpcError(
                grpc.StatusCode.PERMISSION_DENIED, "NOT_OWNER", "callers may only act on their own resources"
            )
        return parts[3]

    async def _existing(self, caller: Caller, turn_id: str) -> TurnName:
        """The turn an idempotency key already started; its record may still be on its way."""
        deadline = self._clock() + 5.0
        while True:
            running = self._running.get(turn_id)
            if running is not None:
                return running.record.name
            record = await self._log.record(turn_id)
            if record is not None and record.name.user_id == caller.principal.user_id:
                return record.name
            if self._clock() > deadline:
                raise RpcError(
                    grpc.StatusCode.ABORTED,
                    "TURN_STARTING",
                    "a send with this idempotency key is still starting; retry",
                    retry_after_s=1.0,
                )
            await asyncio.sleep(0.05)

    async def begin(self, caller: Caller, request: TurnRequest) -> TurnName:
        """Admit and start a turn (or find the one this idempotency key started); its name."""
        principal, arrived = caller.principal, self._clock()
        user_id, key = principal.user_id, request.idempotency_key
        if key:
            found = await self._log.turn_of_key(user_id, key)
            if found is not None:
                return await self._existing(caller, found)
        conversation: ConversationInfo | None = None
        if request.conversation:
            self._conversation_of(caller, request.conversation)
            conversation = await self._history.get_conversation(caller.token, request.conversation)
        model = self._model(
            request.model or (conversation.model if conversation else "") or self._catalog.default_model,
            principal.tier,
        )
        if not request.regenerate:
            system_prompt = (
                conversation.system_prompt if conversation else ""
            ) or self._settings.default_system_prompt
            await self._prompts.check(model, system_prompt, request.text)
        await self._admission.admit(user_id, principal.tier)
        # A new turn id: a retry that found its key above reserves nothing, and a concurrent
        # send that loses the key below gives back what it reserved.
        turn_id = str(uuid.uuid4())
        warnings = await self._budgets.reserve(turn_id, principal, model)
        started = False
        try:
            if key:
                # Held briefly until the turn is stored: a router that dies in between frees
                # the key soon, and the retry finds the user message history kept for this key.
                claimed = await self._log.claim_key(user_id, key, turn_id, _STARTING_CLAIM_S)
                if claimed != turn_id:
                    return await self._existing(caller, claimed)
            try:
                name = await self._store_and_start(
                    caller, request, model, conversation, turn_id, arrived, warnings
                )
            except BaseException:
                if key:
                    await self._log.release_key(user_id, key, turn_id)
                raise
            started = True
        finally:
            if not started:  # no turn, so no usage event will settle the reservation
                await self._budgets.release(turn_id)
        if key:
            await self._log.keep_key(user_id, key, self._settings.idempotency_ttl_s)
        return name

    async def _store_and_start(
        self,
        caller: Caller,
        request: TurnRequest,
        model: CatalogModel,
        conversation: ConversationInfo | None,
        turn_id: str,
        arrived: float,
        warnings: tuple[BudgetWarning, ...],
    ) -> TurnName:
        principal = caller.principal
        send = request.idempotency_key or turn_id
        new_conversation = conversation is None
        if conversation is None:
            conversation = await self._history.create_conversation(
                caller.token, f"models/{model.name}", derived_id("conversation", principal.user_id, send)
            )
        name = TurnName(principal.user_id, conversation.name.rsplit("/", 1)[1], turn_id)
        # The context so far: a new conversation has none; a send that follows the active
        # message reads it while its message is being stored (the time to first token
        # pays for one of the two); an edit or a regeneration reads it afterwards.
        earlier: asyncio.Task[list[PathMessage]] | None = None
        if new_conversation or request.branch_from_start:
            earlier = asyncio.create_task(_nothing())
        elif not request.regenerate and not request.parent_message:
            earlier = asyncio.create_task(self._history.active_path(caller.token, conversation.name))
        try:
            user_message = await self._store_question(caller, request, conversation, name, send)
            record = TurnRecord(
                name=name,
                user_message_id=user_message.rsplit("/", 1)[1],
                assistant_message_id=time_ordered_id(),
                model=f"models/{model.name}",
                tier=principal.tier,
                api_key_id=principal.api_key_id,
                budget_warnings=warnings,
            )
            await self._log.open(record, self.instance, self._settings.lease_s)
        except BaseException:
            if earlier is not None:
                earlier.cancel()
                await asyncio.gather(earlier, return_exceptions=True)
            raise
        turn = _Running(record=record, caller=caller, model=model, arrived=arrived, on_emit=self._unlogged)
        self._running[turn_id] = turn
        context = _ContextSoFar(conversation, earlier, PathMessage(user_message, "user", request.text))
        turn.task = asyncio.create_task(self._run(turn, context), name=f"turn-{turn_id}")
        return name

    async def _store_question(
        self, caller: Caller, request: TurnRequest, conversation: ConversationInfo, name: TurnName, send: str
    ) -> str:
        """Store the user message (or, to regenerate, make the answered one active); its name."""
        if request.regenerate:
            await self._history.update(caller.token, conversation.name, active_message=request.parent_message)
            return request.parent_message
        return await self._history.append(
            caller.token,
            conversation.name,
            name=name.message(time_ordered_id()),
            # No parent given: the message follows the conversation's active message, unless
            # it starts the conversation over.
            parent="" if request.branch_from_start else request.parent_message or conversation.active_message,
            author="user",
            text=request.text,
            request_id=derived_id("user-message", caller.principal.user_id, send),
            turn=str(name),
        )

    # Run ------------------------------------------------------------------------------

    async def _run(self, turn: _Running, context: _ContextSoFar) -> None:
        lease = asyncio.create_task(self._keep_lease(turn), name=f"turn-lease-{turn.record.name.turn_id}")
        outcome = _Outcome(model=turn.model)
        try:
            turn.generation = asyncio.create_task(self._generate(turn, context, outcome))
            try:
                async with asyncio.timeout(self._settings.turn_timeout_s):
                    await asyncio.shield(turn.generation)
            except TimeoutError:
                turn.generation.cancel()
                outcome.fail("TURN_TIMED_OUT", "the answer took longer than the router allows")
            except asyncio.CancelledError:
                if turn.generation.cancelled() and turn.stop_reason:
                    pass  # stopped on purpose: _stop cancelled the generation
                else:
                    raise
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await turn.generation
            if turn.generation.cancelled() and not outcome.error_reason:
                if turn.stop_reason == "shutdown":
                    outcome.fail("ROUTER_STOPPED", "the router stopped; the answer ends here")
                else:
                    outcome.finish_reason = "cancelled"
            elif (error := _exception(turn.generation)) is not None and not outcome.error_reason:
                if isinstance(error, RpcError):  # history or the context refused
                    outcome.fail(error.reason, error.message)
                else:
                    _log.error("turn failed", turn=str(turn.record.name), error_type=type(error).__name__)
                    outcome.fail("INTERNAL", "the turn failed inside the router")
            await self._finish(turn, outcome)
        finally:
            turn.done = True
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await self._logged(turn)
            turn.writer_done = True
            turn.mark_logged(turn.logged)
            lease.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await lease
            with contextlib.suppress(Exception):
                await self._log.release_lease(turn.record.name.turn_id)
            if not turn.usage_written:  # the ledger will never settle it
                await self._budgets.release(turn.record.name.turn_id)
            # Streams still reading get the rest from the log.
            self._running.pop(turn.record.name.turn_id, None)

    async def _path(self, turn: _Running, context: _ContextSoFar) -> list[PathMessage]:
        """The active path up to this turn's user message."""
        conversation = context.conversation
        if context.earlier is not None:
            earlier = await context.earlier
            if earlier and earlier[-1].name == context.message.name:
                return earlier  # a retried send: its message was stored by the first try
            # Read beside the store: usable when it ends where the new message was put.
            if not earlier or earlier[-1].name == conversation.active_message:
                return [*earlier, context.message]
        path = await self._history.active_path(turn.caller.token, conversation.name)
        return _up_to(path, turn.record)

    async def _generate(self, turn: _Running, context: _ContextSoFar, outcome: _Outcome) -> None:
        record, conversation = turn.record, context.conversation
        # TurnStarted names the model that answers. Without fallback models that is known
        # now, so the client gets the turn's name at once (and can cancel a slow first
        # token); with them, only once a backend has answered.
        started_early = not turn.model.fallbacks
        if started_early:
            turn.emit(self._started(record, turn.model))
        path = await self._path(turn, context)
        messages = [ChatMessage(role=m.author, content=m.text) for m in path]
        system_prompt = conversation.system_prompt or self._settings.default_system_prompt
        prompt = await self._prompts.build(turn.model, system_prompt, messages)
        outcome.input_tokens = prompt.prompt_tokens
        turn.record = replace(record, prompt_tokens=prompt.prompt_tokens)
        await self._log.save_record(turn.record)
        generation = Generation(
            messages=prompt.messages, max_tokens=prompt.max_tokens, request_id=f"{record.name.turn_id}"
        )
        asked_at = self._clock()
        try:
            routed = await self._routes.open(turn.model, generation)
        except BackendError as error:
            if not started_early:
                turn.emit(self._started(record, turn.model))
            outcome.fail("NO_BACKEND_AVAILABLE", error.message)
            return
        outcome.model = routed.model
        backend_wait = self._clock() - asked_at
        try:
            if not started_early:
                turn.emit(self._started(record, routed.model))
            coalesce = _Coalescer(turn, self._settings.coalesce_ms / 1000, outcome)
            name = routed.model.name
            inter_token = self._metrics.inter_token.labels(name)
            last_piece = 0.0

            def take(event: Piece | Finish) -> None:
                nonlocal last_piece
                if isinstance(event, Finish):
                    outcome.finish(event)
                    return
                now = self._clock()
                if outcome.output_tokens == 0:
                    ttft = now - turn.arrived
                    self._metrics.ttft.labels(name).observe(ttft)
                    self._metrics.added_ttft.labels(name).observe(max(0.0, ttft - backend_wait))
                else:
                    inter_token.observe(now - last_piece)
                last_piece = now
                coalesce.add(event)

            try:
                take(routed.first)
                async for event in routed:
                    take(event)
            except BackendError as error:
                _log.warning("backend failed mid-answer", turn=str(record.name), backend=routed.backend)
                outcome.fail("BACKEND_FAILED", error.message)
            finally:
                coalesce.flush()
        finally:
            await routed.aclose()

    def _started(self, record: TurnRecord, model: CatalogModel) -> Started:
        name = record.name
        return Started(
            user_message=name.message(record.user_message_id),
            assistant_message=name.message(record.assistant_message_id),
            model=f"models/{model.name}",
            budget_warnings=record.budget_warnings,
        )

    async def _finish(self, turn: _Running, outcome: _Outcome) -> None:
        """Store the answer, charge and bill it, then log TurnCompleted."""
        record = turn.record
        if not any(isinstance(e.kind, Started) for e in turn.events):
            turn.emit(self._started(record, outcome.model))
        completed = outcome.completed()
        text = "".join(e.kind.text for e in turn.events if isinstance(e.kind, Delta))
        if not await self._store_answer(turn.caller, record, outcome.model, completed, text):
            completed = replace(
                completed,
                finish_reason="error",
                error_reason="ANSWER_NOT_STORED",
                error_message="the answer could not be stored; it is in the turn log for an hour",
            )
        turn.usage_written = await self._bill(record, outcome.model, completed, outcome.usage_reported)
        turn.emit(completed)
        self._metrics.turns.labels(outcome.model.name, completed.finish_reason).inc()
        self._metrics.tokens.labels(outcome.model.name, "input").inc(completed.input_tokens)
        self._metrics.tokens.labels(outcome.model.name, "output").inc(completed.output_tokens)
        _log.info(
            "turn ended",
            turn=str(record.name),
            model=outcome.model.name,
            finish_reason=completed.finish_reason,
            error_reason=completed.error_reason,
            input_tokens=completed.input_tokens,
            output_tokens=completed.output_tokens,
        )

    async def _store_answer(
        self, caller: Caller, record: TurnRecord, model: CatalogModel, completed: Completed, text: str
    ) -> bool:
        """Store the answer with its usage and state; False when history would not have it."""
        state = {"stop": "complete", "max_tokens": "complete", "cancelled": "cancelled"}.get(
            completed.finish_reason, "failed"
        )
        name = record.name
        return await _retried(
            "storing the answer",
            str(name),
            lambda: self._history.append(
                caller.token,
                name.conversation,
                name=name.message(record.assistant_message_id),
                parent=name.message(record.user_message_id),
                author="assistant",
                text=text,
                request_id=derived_id("assistant-message", str(name)),
                model=f"models/{model.name}",
                state=state,  # type: ignore[arg-type]
                usage=(completed.input_tokens, completed.output_tokens),
                turn=str(name),
            ),
        )

    async def _bill(
        self, record: TurnRecord, model: CatalogModel, completed: Completed, reported: bool
    ) -> bool:
        """TurnCompleted into the outbox (the ledger bills it) and the tokens off the quota:
        whatever became of the answer, what the model did is billed. `reported`: the counts
        are the model's own (else the router's estimate). False when the event was not written."""
        written = await _retried(
            "writing the usage event",
            str(record.name),
            lambda: self._usage.turn_completed(record, f"models/{model.name}", completed, reported=reported),
        )
        with contextlib.suppress(Exception):  # the quota is a guard; the ledger is the account
            await self._admission.charge(
                record.name.user_id, record.tier, completed.input_tokens + completed.output_tokens
            )
        return written

    def _unlogged(self, turn: _Running) -> None:
        self._dirty[turn.record.name.turn_id] = turn
        self._dirty_signal.set()

    async def _logged(self, turn: _Running, timeout_s: float = 10.0) -> None:
        """Wait until every event of the turn is in the log (or the log is closed to it)."""
        async with asyncio.timeout(timeout_s):
            while turn.logged < len(turn.events) and not turn.log_closed:
                await turn.woken()

    async def _write_logs(self) -> None:
        """The one writer of this router's turn logs: whatever every turn emitted since the
        last write goes to Redis in one round trip, then to the turns' readers. Under load a
        write carries many turns' events; idle, each event goes at once."""
        while True:
            await self._dirty_signal.wait()
            self._dirty_signal.clear()
            turns, self._dirty = list(self._dirty.values()), {}
            work = [(t, t.events[t.logged :]) for t in turns if not t.log_closed and t.logged < len(t.events)]
            if not work:
                continue
            try:
                failures = await self._log.append_many(
                    [(t.record.name.turn_id, pending) for t, pending in work]
                )
            except Exception as error:  # Redis away: keep everything and try again shortly
                _log.warning("turn log write failed", turns=len(work), error_type=type(error).__name__)
                failures = [error] * len(work)
            retry = False
            for (turn, pending), failure in zip(work, failures, strict=True):
                if failure is None:
                    turn.mark_logged(turn.logged + len(pending))
                elif isinstance(failure, SequenceTakenError):
                    # A follower closed this turn as lost (this router looked dead): its
                    # ending stands, and ours goes no further.
                    _log.warning("turn closed by another router", turn=str(turn.record.name))
                    turn.log_closed = True
                    self._stop(turn, "shutdown")
                    turn.mark_logged(turn.logged)
                else:
                    self._dirty.setdefault(turn.record.name.turn_id, turn)
                    retry = True
            if retry:
                await asyncio.sleep(0.2)
                self._dirty_signal.set()

    async def _keep_lease(self, turn: _Running) -> None:
        every = self._settings.lease_s / 3
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(Exception):
                await self._log.renew_lease(turn.record.name.turn_id, self.instance, self._settings.lease_s)

    # Cancel -----------------------------------------------------------------------------

    def _stop(self, turn: _Running, reason: str) -> None:
        if turn.generation is not None and not turn.generation.done():
            turn.stop_reason = turn.stop_reason or reason
            turn.generation.cancel()
        elif turn.generation is None:
            turn.stop_reason = turn.stop_reason or reason

    async def cancel(self, caller: Caller, name: TurnName) -> bool:
        """Cancel a turn; False when it had already ended."""
        _owned(caller, name)
        turn = self._running.get(name.turn_id)
        if turn is not None:
            if turn.done or any(e.final for e in turn.events):
                return False
            self._stop(turn, "cancelled")
            return True
        record = await self._log.record(name.turn_id)
        if record is None or record.name != name:
            raise _turn_not_found(name)
        last = await self._log.read(name.turn_id, max(0, await self._log.last_sequence(name.turn_id) - 1))
        if any(e.final for e in last):
            return False
        await self._log.request_cancel(name.turn_id)
        return True

    # Erase ------------------------------------------------------------------------------

    async def erase_user(self, user_id: str) -> int:
        """A user's data is being erased: stop their turns here and forget every turn log."""
        for turn in list(self._running.values()):
            if turn.record.name.user_id == user_id:
                self._stop(turn, "cancelled")
        forgotten = await self._log.forget_user(user_id)
        _log.info("turn logs erased", user_id=user_id, turns=forgotten)
        return forgotten

    # Follow -----------------------------------------------------------------------------

    async def follow(self, caller: Caller, name: TurnName, after: int) -> AsyncIterator[TurnEvent]:
        """The turn's events with a sequence above after, live until TurnCompleted."""
        _owned(caller, name)
        if after < 0:
            raise invalid_argument([FieldViolation("after_sequence", "must not be negative")])
        self._metrics.streams.inc()
        try:
            turn = self._running.get(name.turn_id)
            if turn is not None and turn.record.name == name:
                async for event in self._follow_here(turn, after):
                    yield event
                return
            record = await self._log.record(name.turn_id)
            if record is None or record.name != name:
                raise _turn_not_found(name)
            async for event in self._follow_log(caller, record, after):
                yield event
        finally:
            self._metrics.streams.dec()

    async def _follow_here(self, turn: _Running, after: int) -> AsyncIterator[TurnEvent]:
        turn.followers += 1
        seen = after
        try:
            while True:
                while seen < turn.logged:
                    event = turn.events[seen]
                    seen += 1
                    yield event
                    if event.final:
                        return
                if turn.done and seen >= turn.logged and turn.writer_done:
                    return  # ended without TurnCompleted (its log could not be written)
                await turn.woken()
        finally:
            turn.followers -= 1
            if turn.followers == 0 and not turn.done:
                self._spawn(self._abandon_if_unread(turn), f"abandon-{turn.record.name.turn_id}")

    async def _abandon_if_unread(self, turn: _Running) -> None:
        await asyncio.sleep(self._settings.abandon_grace_s)
        if turn.followers == 0 and not turn.done and not await self._log.watched(turn.record.name.turn_id):
            _log.info("turn abandoned", turn=str(turn.record.name))
            self._stop(turn, "abandoned")

    async def _follow_log(self, caller: Caller, record: TurnRecord, after: int) -> AsyncIterator[TurnEvent]:
        """Follow a turn another router runs (or ran), through the turn log."""
        turn_id = record.name.turn_id
        seen = after
        while True:
            await self._log.mark_watched(
                turn_id, self._settings.abandon_grace_s + 2 * _FOLLOW_BLOCK_MS / 1000
            )
            events = await self._log.read(turn_id, seen) or await self._log.wait(
                turn_id, seen, _FOLLOW_BLOCK_MS
            )
            for event in events:
                seen = event.sequence
                yield event
                if event.final:
                    return
            if not events and await self._log.lease_holder(turn_id) is None:
                if seen == 0 and not await self._log.exists(turn_id):
                    raise _turn_not_found(record.name)
                await self._close_lost(caller, record)

    async def _close_lost(self, caller: Caller, record: TurnRecord) -> None:
        """End a turn whose router died: store what was logged as failed, then log the end."""
        turn_id = record.name.turn_id
        record = await self._log.record(turn_id) or record
        logged: list[TurnEvent] = []
        while batch := await self._log.read(turn_id, logged[-1].sequence if logged else 0):
            logged += batch
        if any(e.final for e in logged):
            return
        model_name = next((e.kind.model for e in logged if isinstance(e.kind, Started)), record.model)
        try:
            model = self._catalog.model(model_name.removeprefix("models/"))
        except LookupError:
            model = self._catalog.model(self._catalog.default_model)
        deltas = [e.kind for e in logged if isinstance(e.kind, Delta)]
        output = sum(d.tokens for d in deltas)
        cost, currency = _cost(model, record.prompt_tokens, output)
        completed = Completed(
            finish_reason="error",
            input_tokens=record.prompt_tokens,
            output_tokens=output,
            cost_micros=cost,
            currency=currency,
            error_message="the router running this turn stopped; the answer ends at the last event logged",
            error_reason="ROUTER_LOST",
        )
        await self._store_answer(caller, record, model, completed, "".join(d.text for d in deltas))
        if not await self._bill(record, model, completed, reported=False):
            await self._budgets.release(turn_id)
        events: list[TurnEvent] = []
        sequence = logged[-1].sequence if logged else 0
        if not any(isinstance(e.kind, Started) for e in logged):
            sequence += 1
            events.append(TurnEvent(sequence, _now_ms(), self._started(record, model)))
        events.append(TurnEvent(sequence + 1, _now_ms(), completed))
        try:
            await self._log.append(turn_id, *events)
            _log.warning("closed a turn whose router was lost", turn=str(record.name), events=len(logged))
        except SequenceTakenError:
            pass  # the turn's router (or another follower) logged first; read on


@dataclass(frozen=True)
class _ContextSoFar:
    """What a turn knows of its context when it starts."""

    conversation: ConversationInfo
    #: The active path before this turn's message, being read (None: read it afterwards).
    earlier: asyncio.Task[list[PathMessage]] | None
    #: This turn's user message.
    message: PathMessage


async def _nothing() -> list[PathMessage]:
    return []


@dataclass
class _Outcome:
    """How the generation went, filled in as it runs."""

    model: CatalogModel
    input_tokens: int = 0
    output_tokens: int = 0
    reported: Finish | None = None
    finish_reason: FinishReason = "stop"
    error_reason: str = ""
    error_message: str = ""

    def finish(self, event: Finish) -> None:
        self.reported = event
        self.finish_reason = "stop" if event.reason == "stop" else "max_tokens"

    def fail(self, reason: str, message: str) -> None:
        self.finish_reason, self.error_reason, self.error_message = "error", reason, message

    @property
    def usage_reported(self) -> bool:
        """The model reported its usage: a Finish that counts the prompt. A server that
        streams no usage (llama-cpp-python's) reports no prompt tokens, and its completion
        count is the pieces the router received."""
        return self.reported is not None and self.reported.prompt_tokens > 0

    def completed(self) -> Completed:
        # The model's own counts when it reported them; otherwise (cancelled, failed, a server
        # that streams no usage) the prompt as the router counted it and the tokens streamed.
        if self.reported is not None and self.usage_reported:
            input_tokens, output_tokens = self.reported.prompt_tokens, self.reported.completion_tokens
        else:
            input_tokens, output_tokens = self.input_tokens, self.output_tokens
        cost, currency = _cost(self.model, input_tokens, output_tokens)
        return Completed(
            finish_reason=self.finish_reason,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_micros=cost,
            currency=currency,
            error_message=self.error_message,
            error_reason=self.error_reason,
        )


class _Coalescer:
    """Turns pieces into deltas: at most one delta per window; 0 sends each piece at once."""

    def __init__(self, turn: _Running, window_s: float, outcome: _Outcome) -> None:
        self._turn = turn
        self._window_s = window_s
        self._outcome = outcome
        self._texts: list[str] = []
        self._tokens = 0
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, piece: Piece) -> None:
        self._outcome.output_tokens += piece.tokens
        self._texts.append(piece.text)
        self._tokens += piece.tokens
        if self._window_s <= 0:
            self.flush()
            return
        loop = asyncio.get_running_loop()
        due = self._last + self._window_s
        if loop.time() >= due:
            self.flush()
        elif self._timer is None:
            self._timer = loop.call_at(due, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._texts:
            self._turn.emit(Delta("".join(self._texts), self._tokens))
            self._texts, self._tokens = [], 0
            self._last = asyncio.get_running_loop().time()


async def _retried(what: str, turn: str, attempt: Callable[[], Awaitable[object]], tries: int = 4) -> bool:
    """Run an idempotent write, retrying what may pass (a dependency briefly away); False
    when it never succeeded or was refused for good."""
    for number in range(tries):
        try:
            await attempt()
            return True
        except Exception as error:
            final = isinstance(error, RpcError) and error.code in _FINAL_CODES
            _log.warning(
                f"{what} failed",
                turn=turn,
                attempt=number,
                error_type=type(error).__name__,
                reason=error.reason if isinstance(error, RpcError) else "",
            )
            if final:
                return False
            if number < tries - 1:
                await asyncio.sleep(0.5 * 2**number)
    return False


def _exception(task: asyncio.Task[None]) -> BaseException | None:
    if task.cancelled() or not task.done():
        return None
    return task.exception()


def _up_to(path: Sequence[PathMessage], record: TurnRecord) -> list[PathMessage]:
    """The active path up to this turn's user message (a later turn may have moved on)."""
    for index, message in enumerate(path):
        if message.name.endswith(f"/messages/{record.user_message_id}"):
            return list(path[: index + 1])
    return list(path)


def _owned(caller: Caller, name: TurnName) -> None:
    if name.user_id != caller.principal.user_id:
        raise RpcError(
            grpc.StatusCode.PERMISSION_DENIED, "NOT_OWNER", "callers may only act on their own resources"
        )


def _turn_not_found(name: TurnName) -> RpcError:
    return RpcError(
        grpc.StatusCode.NOT_FOUND,
        "TURN_NOT_FOUND",
        f"{name} is unknown or too old to resume",
        metadata={"turn": str(name)},
    )

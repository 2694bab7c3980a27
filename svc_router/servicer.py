"""The wire layer of svc_router: ChatService requests in, turn engine calls, events out.

StreamTurn (server streaming, for browsers), Chat (bidirectional, for native clients) and
ResumeTurn all read turns through `TurnEngine.follow`; they differ only in how requests
arrive. A stream's handler reads events at its client's pace: the turn itself runs apart,
so a slow client holds up nobody (docs/adr/0011-chat-turn.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from parley.chat.v1 import chat_pb2 as pb
from parley.common.v1 import common_pb2
from parley_core.auth import bearer_token, current_principal, require_scope
from parley_core.catalog import Catalog, CatalogModel
from parley_core.errors import FieldViolation, RpcError, invalid_argument
from parley_core.paging import offset_page, page_size
from parley_core.servicer import add_servicer
from svc_router.engine import Caller, TurnEngine, TurnRequest
from svc_router.settings import RouterSettings
from svc_router.turns import BudgetWarning, Completed, Delta, Started, TurnEvent, TurnName

SERVICE = pb.DESCRIPTOR.services_by_name["ChatService"]

Context = grpc.aio.ServicerContext[Any, Any]
Health = Literal["ready", "degraded", "unavailable", "unknown"]

_FINISH = {
    "stop": pb.FINISH_REASON_STOP,
    "max_tokens": pb.FINISH_REASON_MAX_TOKENS,
    "cancelled": pb.FINISH_REASON_CANCELLED,
    "error": pb.FINISH_REASON_ERROR,
}
_HEALTH = {
    "ready": pb.MODEL_HEALTH_READY,
    "degraded": pb.MODEL_HEALTH_DEGRADED,
    "unavailable": pb.MODEL_HEALTH_UNAVAILABLE,
    "unknown": pb.MODEL_HEALTH_UNSPECIFIED,
}
_ID = r"[A-Za-z0-9_-]{1,64}"
_TURN = re.compile(rf"^users/({_ID})/conversations/({_ID})/turns/({_ID})$")
_MESSAGE = re.compile(rf"^users/{_ID}/conversations/{_ID}/messages/{_ID}$")
#: Events a Chat stream may hold for a slow client, across its turns, before the turns'
#: readers wait for it (each turn runs on regardless).
_CHAT_BUFFER = 64


class HealthSource:
    """What ListModels asks about a model's backends (the backends' health monitor)."""

    async def health(self, model: CatalogModel) -> Health:
        return "unknown"


def _caller(context: Context) -> Caller:
    principal = current_principal()
    require_scope(principal, "chat")
    token = bearer_token(context.invocation_metadata()) or ""
    return Caller(principal, token)


def turn_name(name: str, field: str = "name") -> TurnName:
    match = _TURN.match(name)
    if match is None:
        raise invalid_argument(
            [FieldViolation(field, "must look like users/{user}/conversations/{c}/turns/{turn}")]
        )
    return TurnName(*match.groups())


def _turn_request(wanted: pb.TurnInput, message_chars: int) -> TurnRequest:
    violations: list[FieldViolation] = []
    if wanted.regenerate:
        if wanted.text:
            violations.append(FieldViolation("input.text", "must be empty when regenerate is set"))
        if not wanted.parent_message:
            violations.append(
                FieldViolation("input.parent_message", "names the user message to answer again")
            )
        if not wanted.conversation:
            violations.append(FieldViolation("input.conversation", "is required when regenerate is set"))
    elif not wanted.text.strip():
        violations.append(FieldViolation("input.text", "must not be empty"))
    elif len(wanted.text) > message_chars:
        violations.append(FieldViolation("input.text", f"must be at most {message_chars} characters"))
    if wanted.branch_from_start:
        if not wanted.conversation:
            violations.append(
                FieldViolation("input.conversation", "is required when branch_from_start is set")
            )
        if wanted.parent_message:
            violations.append(
                FieldViolation("input.parent_message", "must be empty when branch_from_start is set")
            )
        if wanted.regenerate:
            violations.append(FieldViolation("input.regenerate", "cannot be set with branch_from_start"))
    if wanted.parent_message:
        if not wanted.conversation:
            violations.append(FieldViolation("input.parent_message", "needs input.conversation"))
        elif not _MESSAGE.match(wanted.parent_message) or not wanted.parent_message.startswith(
            wanted.conversation + "/messages/"
        ):
            violations.append(
                FieldViolation("input.parent_message", "must be a message of input.conversation")
            )
    if wanted.idempotency_key:
        try:
            uuid.UUID(wanted.idempotency_key)
        except ValueError:
            violations.append(FieldViolation("input.idempotency_key", "must be a UUID"))
    if len(wanted.model) > 128:
        violations.append(FieldViolation("input.model", "must be at most 128 characters"))
    if violations:
        raise invalid_argument(violations)
    return TurnRequest(
        conversation=wanted.conversation,
        text=wanted.text,
        parent_message=wanted.parent_message,
        model=wanted.model,
        idempotency_key=wanted.idempotency_key,
        regenerate=wanted.regenerate,
        branch_from_start=wanted.branch_from_start,
    )


def event_message(name: TurnName, event: TurnEvent) -> pb.TurnEvent:
    stamp = Timestamp()
    stamp.FromMilliseconds(event.time_ms)
    wire = pb.TurnEvent(turn=str(name), sequence=event.sequence, event_time=stamp)
    kind = event.kind
    if isinstance(kind, Started):
        wire.started.CopyFrom(
            pb.TurnStarted(
                turn=str(name),
                user_message=kind.user_message,
                assistant_message=kind.assistant_message,
                model=kind.model,
                budget_warnings=[_budget_warning(w) for w in kind.budget_warnings],
            )
        )
    elif isinstance(kind, Delta):
        wire.delta.text = kind.text
    else:
        wire.completed.CopyFrom(_completed(kind))
    return wire


def _budget_warning(warning: BudgetWarning) -> pb.BudgetWarning:
    return pb.BudgetWarning(
        budget=warning.budget,
        soft_limit=common_pb2.Money(currency_code=warning.currency, micros=warning.soft_limit_micros),
        committed=common_pb2.Money(currency_code=warning.currency, micros=warning.committed_micros),
    )


def _completed(kind: Completed) -> pb.TurnCompleted:
    return pb.TurnCompleted(
        finish_reason=_FINISH[kind.finish_reason],
        usage=common_pb2.TokenUsage(input_tokens=kind.input_tokens, output_tokens=kind.output_tokens),
        cost_estimate=common_pb2.Money(currency_code=kind.currency, micros=kind.cost_micros),
        error_message=kind.error_message,
        error_reason=kind.error_reason,
    )


def _model(model: CatalogModel, health: Health, now: datetime) -> pb.Model:
    price = model.price_at(now)
    return pb.Model(
        name=f"models/{model.name}",
        display_name=model.display_name,
        context_window=model.context_window,
        max_output_tokens=model.max_output_tokens,
        input_price_per_million=common_pb2.Money(
            currency_code=price.currency, micros=price.input_per_million_tokens
        ),
        output_price_per_million=common_pb2.Money(
            currency_code=price.currency, micros=price.output_per_million_tokens
        ),
        capabilities=list(model.capabilities),
        tiers=list(model.tiers),
        health=_HEALTH[health],
    )


class ChatServiceServicer:
    """parley.chat.v1.ChatService."""

    def __init__(
        self, settings: RouterSettings, engine: TurnEngine, catalog: Catalog, health: HealthSource
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._catalog = catalog
        self._health = health

    async def StreamTurn(
        self, request: pb.StreamTurnRequest, context: Context
    ) -> AsyncIterator[pb.StreamTurnResponse]:
        caller = _caller(context)
        name = await self._engine.begin(caller, _turn_request(request.input, self._settings.message_chars))
        async for event in self._engine.follow(caller, name, 0):
            yield pb.StreamTurnResponse(event=event_message(name, event))

    async def ResumeTurn(
        self, request: pb.ResumeTurnRequest, context: Context
    ) -> AsyncIterator[pb.ResumeTurnResponse]:
        caller = _caller(context)
        name = turn_name(request.name)
        async for event in self._engine.follow(caller, name, request.after_sequence):
            yield pb.ResumeTurnResponse(event=event_message(name, event))

    async def CancelTurn(self, request: pb.CancelTurnRequest, context: Context) -> pb.CancelTurnResponse:
        caller = _caller(context)
        return pb.CancelTurnResponse(cancelled=await self._engine.cancel(caller, turn_name(request.name)))

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        principal = current_principal()
        size = page_size(request.page_size, 50, 200)
        offered = [m for m in self._catalog.models if m.available_to(principal.tier)]
        page, token = offset_page(offered, size, request.page_token)
        healths = await asyncio.gather(*(self._health.health(m) for m in page))
        now = datetime.now(UTC)
        return pb.ListModelsResponse(
            models=[_model(m, h, now) for m, h in zip(page, healths, strict=True)], next_page_token=token
        )

    async def Chat(
        self, requests: AsyncIterator[pb.ChatRequest], context: Context
    ) -> AsyncIterator[pb.ChatResponse]:
        """Turns over one stream: each start, resume or cancel is served as it arrives."""
        caller = _caller(context)
        out: asyncio.Queue[pb.ChatResponse | RpcError | None] = asyncio.Queue(_CHAT_BUFFER)
        readers: set[asyncio.Task[None]] = set()

        async def relay(name: TurnName, after: int) -> None:
            try:
                async for event in self._engine.follow(caller, name, after):
                    await out.put(pb.ChatResponse(event=event_message(name, event)))
            except RpcError as error:
                await out.put(error)

        async def start(wanted: pb.TurnInput) -> None:
            try:
                name = await self._engine.begin(caller, _turn_request(wanted, self._settings.message_chars))
            except RpcError as error:
                await out.put(error)
                return
            await relay(name, 0)

        async def read_requests() -> None:
            async for request in requests:
                action = request.WhichOneof("action")
                task: asyncio.Task[None] | None = None
                if action == "start":
                    task = asyncio.create_task(start(request.start))
                elif action == "resume":
                    task = asyncio.create_task(
                        relay(turn_name(request.resume.name, "resume.name"), request.resume.after_sequence)
                    )
                elif action == "cancel_turn":
                    await self._engine.cancel(caller, turn_name(request.cancel_turn, "cancel_turn"))
                else:
                    raise invalid_argument([FieldViolation("action", "must be start, cancel_turn or resume")])
                if task is not None:
                    readers.add(task)
                    task.add_done_callback(readers.discard)
            # The client is done sending: end once every turn it started has ended.
            while readers:
                await asyncio.wait(list(readers))
            await out.put(None)

        async def reading() -> None:
            try:
                await read_requests()
            except RpcError as error:
                await out.put(error)

        reader = asyncio.create_task(reading())
        try:
            while True:
                item = await out.get()
                if item is None:
                    return
                if isinstance(item, RpcError):
                    raise item
                yield item
        finally:
            reader.cancel()
            for task in list(readers):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.gather(reader, *readers, return_exceptions=True)


async def register(server: grpc.aio.Server, servicer: ChatServiceServicer) -> Sequence[str]:
    """Add svc_router's servicers to server; the names are served by health and reflection."""
    return [add_servicer(server, SERVICE, servicer)]

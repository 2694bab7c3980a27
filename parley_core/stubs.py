"""Typed asyncio client stubs for Parley's services.

grpcio generates one stub class for both channel kinds; mypy-protobuf describes the
asyncio flavour as a separate, type-only class. These constructors give callers that type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2_grpc

from parley.chat.v1 import chat_pb2_grpc
from parley.history.v1 import history_pb2_grpc
from parley.ledger.v1 import ledger_pb2_grpc
from parley.session.v1 import session_pb2_grpc

if TYPE_CHECKING:
    from parley.chat.v1.chat_pb2_grpc import ChatServiceAsyncStub
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub
    from parley.ledger.v1.ledger_pb2_grpc import LedgerServiceAsyncStub
    from parley.session.v1.session_pb2_grpc import SessionServiceAsyncStub


__all__ = [
    "chat_stub",
    "health_stub",
    "history_stub",
    "ledger_stub",
    "reflection_stub",
    "session_stub",
]


def session_stub(channel: grpc.aio.Channel) -> SessionServiceAsyncStub:
    return cast("SessionServiceAsyncStub", session_pb2_grpc.SessionServiceStub(channel))


def history_stub(channel: grpc.aio.Channel) -> HistoryServiceAsyncStub:
    return cast("HistoryServiceAsyncStub", history_pb2_grpc.HistoryServiceStub(channel))


def chat_stub(channel: grpc.aio.Channel) -> ChatServiceAsyncStub:
    return cast("ChatServiceAsyncStub", chat_pb2_grpc.ChatServiceStub(channel))


def ledger_stub(channel: grpc.aio.Channel) -> LedgerServiceAsyncStub:
    return cast("LedgerServiceAsyncStub", ledger_pb2_grpc.LedgerServiceStub(channel))


def health_stub(channel: grpc.Channel | grpc.aio.Channel) -> Any:
    """grpc.health.v1 (its published type stubs describe only the synchronous flavour)."""
    return health_pb2_grpc.HealthStub(channel)


def reflection_stub(channel: grpc.aio.Channel) -> Any:
    """grpc.reflection.v1alpha (its published type stubs describe only the synchronous flavour)."""
    return reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]

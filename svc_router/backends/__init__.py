"""Model backends: Triton and OpenAI-compatible servers, their breakers and failover."""

from svc_router.backends._base import (
    Backend,
    BackendError,
    BackendEvent,
    BackendHealth,
    ChatMessage,
    Finish,
    Generation,
    Piece,
    Role,
)
from svc_router.backends._breaker import BreakerState, CircuitBreaker
from svc_router.backends._openai import OpenAIBackend
from svc_router.backends._routing import ModelHealth, ModelRoutes, NoBackendAvailable, RoutedStream
from svc_router.backends._triton import TritonBackend

__all__ = [
    "Backend",
    "BackendError",
    "BackendEvent",
    "BackendHealth",
    "BreakerState",
    "ChatMessage",
    "CircuitBreaker",
    "Finish",
    "Generation",
    "ModelHealth",
    "ModelRoutes",
    "NoBackendAvailable",
    "OpenAIBackend",
    "Piece",
    "Role",
    "RoutedStream",
    "TritonBackend",
]

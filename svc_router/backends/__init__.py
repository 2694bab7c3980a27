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

__all__ = [
    "Backend",
    "BackendError",
    "BackendEvent",
    "BackendHealth",
    "ChatMessage",
    "Finish",
    "Generation",
    "Piece",
    "Role",
]

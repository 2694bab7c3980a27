"""The statuses the auth path answers with, built in one place."""

from __future__ import annotations

import grpc

from parley_core.errors import RpcError

#: The ErrorInfo reason when the auth path cannot reach what it needs (Redis, the JWKS).
AUTH_BACKEND_UNAVAILABLE = "AUTH_BACKEND_UNAVAILABLE"

#: How long a caller is told to wait before retrying after AUTH_BACKEND_UNAVAILABLE.
RETRY_AFTER_S = 1.0


def unauthenticated(message: str, reason: str = "UNAUTHENTICATED") -> RpcError:
    return RpcError(grpc.StatusCode.UNAUTHENTICATED, reason, message)


def permission_denied(message: str, reason: str = "PERMISSION_DENIED", **metadata: str) -> RpcError:
    return RpcError(grpc.StatusCode.PERMISSION_DENIED, reason, message, metadata=metadata)


def backend_unavailable(what: str) -> RpcError:
    """UNAVAILABLE with RetryInfo: the auth path failed closed because `what` is unreachable.

    `what` names the role of the backend ("revocation state", "signing keys"), never its
    address: a caller has no business knowing hosts and ports.
    """
    return RpcError(
        grpc.StatusCode.UNAVAILABLE,
        AUTH_BACKEND_UNAVAILABLE,
        f"cannot check the access token now ({what} unavailable); retry shortly",
        metadata={"backend": what.replace(" ", "_")},
        retry_after_s=RETRY_AFTER_S,
    )

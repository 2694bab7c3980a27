"""svc_history's failures, each with its precise status, in one place."""

from __future__ import annotations

import grpc

from parley_core.errors import FieldViolation, RpcError, invalid_argument

DOMAIN = "history.parley.dev"


def bad_request(*violations: FieldViolation) -> RpcError:
    return invalid_argument(list(violations))


def not_found(name: str) -> RpcError:
    """NOT_FOUND for a name: the same answer whether the resource is missing or another
    user's (the message repeats only what the caller sent)."""
    return RpcError(grpc.StatusCode.NOT_FOUND, "NOT_FOUND", f"{name} does not exist", DOMAIN, {"name": name})


def etag_mismatch(name: str) -> RpcError:
    return RpcError(
        grpc.StatusCode.ABORTED, "ETAG_MISMATCH", f"{name} changed since it was read", DOMAIN, {"name": name}
    )


def message_exists(name: str) -> RpcError:
    return RpcError(
        grpc.StatusCode.ALREADY_EXISTS,
        "MESSAGE_EXISTS",
        f"{name} was already written by another request",
        DOMAIN,
        {"name": name},
    )


def conversation_full(name: str, limit: int) -> RpcError:
    return RpcError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONVERSATION_FULL",
        f"{name} holds the most messages a conversation may ({limit}); start a new conversation",
        DOMAIN,
        {"name": name, "limit": str(limit)},
    )


def nothing_to_share(name: str) -> RpcError:
    return RpcError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONVERSATION_EMPTY",
        f"{name} has no messages to share",
        DOMAIN,
        {"name": name},
    )


def snapshot_too_long(limit: int) -> RpcError:
    return RpcError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "SNAPSHOT_TOO_LONG",
        f"a share link holds at most {limit} messages; share an earlier message",
        DOMAIN,
        {"limit": str(limit)},
    )


def share_link_unavailable() -> RpcError:
    # One answer for an unknown, revoked and expired token: a reader learns nothing more.
    return RpcError(
        grpc.StatusCode.NOT_FOUND,
        "SHARE_LINK_NOT_FOUND",
        "this share link does not exist, was revoked or has expired",
        DOMAIN,
    )


def share_password_invalid() -> RpcError:
    return RpcError(
        grpc.StatusCode.PERMISSION_DENIED,
        "SHARE_PASSWORD_INVALID",
        "this share link needs its password",
        DOMAIN,
    )


def too_many_guesses(retry_after_s: float) -> RpcError:
    return RpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "SHARE_PASSWORD_THROTTLED",
        "too many password attempts for this share link; retry later",
        DOMAIN,
        retry_after_s=retry_after_s,
    )


def needs_password_session(what: str) -> RpcError:
    return RpcError(
        grpc.StatusCode.PERMISSION_DENIED,
        "NEEDS_PASSWORD_SESSION",
        f"{what} needs a signed-in session, not an API key",
        DOMAIN,
    )

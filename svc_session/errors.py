"""svc_session's failures, each with its precise status, in one place."""

from __future__ import annotations

import grpc

from parley_core.errors import FieldViolation, RpcError, invalid_argument

DOMAIN = "session.parley.dev"


def bad_request(*violations: FieldViolation) -> RpcError:
    return invalid_argument(list(violations))


def email_taken() -> RpcError:
    return RpcError(
        grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN", "an account with this email exists", DOMAIN
    )


def invalid_credentials() -> RpcError:
    # One answer for an unknown email, a wrong password and a disabled account, so the
    # reply never tells a guesser which emails have accounts.
    return RpcError(grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS", "wrong email or password", DOMAIN)


def invalid_api_key() -> RpcError:
    return RpcError(
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_API_KEY",
        "the API key is unknown, revoked or expired",
        DOMAIN,
    )


def invalid_refresh_token(reason: str = "INVALID_REFRESH_TOKEN") -> RpcError:
    return RpcError(grpc.StatusCode.UNAUTHENTICATED, reason, "the refresh token is not valid", DOMAIN)


def invalid_reset_token() -> RpcError:
    return RpcError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_RESET_TOKEN",
        "the reset token is unknown, used or expired",
        DOMAIN,
        field_violations=[FieldViolation("reset_token", "unknown, already used or expired")],
    )


def not_found(what: str, name: str) -> RpcError:
    return RpcError(
        grpc.StatusCode.NOT_FOUND, "NOT_FOUND", f"{what} {name} does not exist", DOMAIN, {"name": name}
    )


def etag_mismatch(name: str) -> RpcError:
    return RpcError(
        grpc.StatusCode.ABORTED, "ETAG_MISMATCH", f"{name} changed since it was read", DOMAIN, {"name": name}
    )


def api_key_sign_in_cannot(what: str) -> RpcError:
    return RpcError(
        grpc.StatusCode.PERMISSION_DENIED,
        "NEEDS_PASSWORD_SESSION",
        f"{what} needs a signed-in session, not an API key",
        DOMAIN,
    )


def email_not_verified(what: str) -> RpcError:
    return RpcError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "EMAIL_NOT_VERIFIED",
        f"{what} need a verified email address; open the link mailed at sign-up",
        DOMAIN,
    )


def invalid_verification_token() -> RpcError:
    return RpcError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_VERIFICATION_TOKEN",
        "the verification token is unknown, used or expired",
        DOMAIN,
        field_violations=[FieldViolation("verification_token", "unknown, already used or expired")],
    )

"""A failed call as one line a person can act on: the status message, why, and when to retry.

Parley's services put `google.rpc` details on every error status: one ErrorInfo (an
UPPER_SNAKE reason), and RetryInfo or BadRequest where they apply. They travel in the
`grpc-status-details-bin` trailer as a serialized `google.rpc.Status`.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

__all__ = ["ChatError", "from_rpc_error"]

_DETAILS_KEY = "grpc-status-details-bin"


@dataclass
class ChatError(Exception):
    """Why the client could not go on; `str()` is the line it prints."""

    message: str
    code: grpc.StatusCode | None = None
    #: ErrorInfo.reason, for example "RATE_LIMITED".
    reason: str = ""
    #: RetryInfo.retry_delay in seconds, when the server said when to try again.
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        line = self.message
        why = [part for part in (self.code.name if self.code else "", self.reason) if part]
        if len(why) == 2 and why[0] == why[1]:
            why = why[:1]
        if why:
            line += f" ({': '.join(why)})"
        if self.retry_after_s is not None:
            line += f"; try again in {_wait(self.retry_after_s)}"
        return line

    def as_json(self) -> dict[str, object]:
        found: dict[str, object] = {"message": self.message}
        if self.code is not None:
            found["code"] = self.code.name
        if self.reason:
            found["reason"] = self.reason
        if self.retry_after_s is not None:
            found["retryAfterSeconds"] = self.retry_after_s
        return found


def _wait(seconds: float) -> str:
    """A delay as a person reads it: seconds, minutes, hours or days (a budget's month)."""
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 2 * 3600:
        return f"{round(seconds / 60)} min"
    if seconds < 2 * 86_400:
        return f"{round(seconds / 3600)} h"
    return f"{round(seconds / 86_400)} days"


def from_rpc_error(error: grpc.aio.AioRpcError) -> ChatError:
    """The ChatError of a failed call, with the reason and retry delay from its details."""
    code = error.code()
    failure = ChatError(error.details() or code.name.replace("_", " ").lower(), code)
    for key, value in error.trailing_metadata() or ():
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return failure
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                failure.reason = info.reason
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                failure.retry_after_s = retry.retry_delay.ToNanoseconds() / 1e9
    return failure

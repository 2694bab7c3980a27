"""gRPC error statuses with `google.rpc` details, built in one place.

Every error a Parley service returns carries exactly one ErrorInfo (an UPPER_SNAKE reason
in the service's domain), plus BadRequest field violations or RetryInfo where they apply.
Domain code raises `RpcError`; the servicer layer turns it into the wire status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "FieldViolation",
    "RpcError",
    "details_of",
    "from_unexpected",
    "invalid_argument",
    "unimplemented",
]


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path (for example "user.email") and what is wrong with it."""

    field: str
    description: str


@dataclass
class RpcError(Exception):
    """A failure with a precise status, raised by domain code and sent as-is to the caller."""

    code: grpc.StatusCode
    reason: str
    message: str
    domain: str = "parley.dev"
    metadata: Mapping[str, str] = field(default_factory=dict)
    field_violations: Sequence[FieldViolation] = ()
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def to_status(self) -> grpc.Status:
        """The status with its details, ready for `context.abort_with_status`."""
        details: list[any_pb2.Any] = []
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=self.domain, metadata=dict(self.metadata)
        )
        details.append(_pack(info))
        if self.field_violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in self.field_violations
                ]
            )
            details.append(_pack(bad))
        if self.retry_after_s is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_after_s * 1e9))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        status = status_pb2.Status(code=_CODES[self.code], message=self.message, details=details)
        return rpc_status.to_status(status)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


_CODES: dict[grpc.StatusCode, int] = {
    code: getattr(code_pb2, code.name) for code in grpc.StatusCode if hasattr(code_pb2, code.name)
}


def invalid_argument(violations: Sequence[FieldViolation], message: str | None = None) -> RpcError:
    """INVALID_ARGUMENT naming every bad field."""
    text = message or "; ".join(f"{v.field}: {v.description}" for v in violations)
    return RpcError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", text, field_violations=violations)


def unimplemented(method: str) -> RpcError:
    """UNIMPLEMENTED for a method whose contract exists but whose code does not yet."""
    return RpcError(
        grpc.StatusCode.UNIMPLEMENTED,
        "METHOD_NOT_IMPLEMENTED",
        f"{method} is not implemented yet",
        metadata={"method": method},
    )


def details_of(error: grpc.aio.AioRpcError | grpc.RpcError) -> list[object]:
    """The decoded `google.rpc` details of a received error (for clients and tests)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return []
    decoded: list[object] = []
    for detail in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                decoded.append(message)
    return decoded


def _backend_of(error: BaseException) -> str | None:
    """The dependency an infrastructure error came from, or None for a bug."""
    module = type(error).__module__
    if module.startswith("cassandra"):
        return "cassandra"
    if module.startswith("redis"):
        return "redis"
    if module.startswith(("pulsar", "_pulsar")):
        return "pulsar"
    if isinstance(error, (ConnectionError, TimeoutError)):
        return "network"
    return None


def from_unexpected(error: BaseException) -> RpcError:
    """The status for an exception no domain code turned into an RpcError.

    A dependency that is down or slow is UNAVAILABLE with RetryInfo (a retry may succeed);
    anything else is INTERNAL. Neither repeats the exception's text, which can hold
    addresses and internals a caller has no business seeing.
    """
    backend = _backend_of(error)
    if backend is not None:
        return RpcError(
            grpc.StatusCode.UNAVAILABLE,
            "BACKEND_UNAVAILABLE",
            f"a storage or messaging backend ({backend}) is unavailable; retry shortly",
            metadata={"backend": backend},
            retry_after_s=1.0,
        )
    return RpcError(grpc.StatusCode.INTERNAL, "INTERNAL", "internal error")

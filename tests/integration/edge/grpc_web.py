"""A browser's view of the edge: unary gRPC-Web calls over HTTP/1.1, from any loopback address.

grpc.aio cannot pick its source address; httpx can, and Linux accepts every 127/8 address
as a source. A test that spends sign-in tokens does so from an address of its own, so the
buckets of 127.0.0.1 (every other test's address) stay full.
"""

from __future__ import annotations

import base64
import secrets
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import unquote

import grpc
import httpx
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

_CODES = {code.value[0]: code for code in grpc.StatusCode}
_DATA, _TRAILERS = 0x00, 0x80


def random_loopback() -> str:
    """A 127/8 address other than 127.0.0.x, different for each caller (almost surely)."""
    return f"127.{1 + secrets.randbelow(254)}.{secrets.randbelow(256)}.{1 + secrets.randbelow(254)}"


@contextmanager
def client_from(source: str) -> Iterator[httpx.Client]:
    """An HTTP/1.1 client whose connections come from source."""
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=10) as client:
        yield client


@dataclass(frozen=True)
class Reply:
    """One call's outcome: the status, its google.rpc details and the response message bytes."""

    code: grpc.StatusCode
    message: str
    details: list[object] = field(default_factory=list)
    payload: bytes = b""
    http_status: int = 200

    def error_info(self) -> error_details_pb2.ErrorInfo:
        [info] = [d for d in self.details if isinstance(d, error_details_pb2.ErrorInfo)]
        return info


def call(
    client: httpx.Client,
    endpoint: tuple[str, int],
    method: str,
    request: Message,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """Call method ("/parley.session.v1.SessionService/Login") at endpoint as a browser would."""
    host, port = endpoint
    body = request.SerializeToString()
    answer = client.post(
        f"http://{host}:{port}{method}",
        content=struct.pack(">BI", _DATA, len(body)) + body,
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1", **(headers or {})},
    )
    # A reply the edge made itself (a refusal, a service it cannot reach) is trailers-only
    # and keeps its HTTP status (401, 503); anything else must be 200.
    assert answer.status_code == 200 or "grpc-status" in answer.headers, (answer.status_code, answer.text)
    payload, trailers = b"", dict(answer.headers)  # a trailers-only answer has its status here
    content = answer.content
    while content:
        flag, length = struct.unpack(">BI", content[:5])
        frame, content = content[5 : 5 + length], content[5 + length :]
        if flag & _TRAILERS:
            for line in frame.decode().split("\r\n"):
                key, _, value = line.partition(":")
                if key:
                    trailers[key.strip().lower()] = value.strip()
        else:
            payload += frame
    return Reply(
        code=_CODES[int(trailers["grpc-status"])],
        message=unquote(trailers.get("grpc-message", "")),
        details=_details(trailers.get("grpc-status-details-bin", "")),
        payload=payload,
        http_status=answer.status_code,
    )


def _details(encoded: str) -> list[object]:
    """The known google.rpc details inside grpc-status-details-bin (unpadded base64)."""
    if not encoded:
        return []
    status = status_pb2.Status.FromString(base64.b64decode(encoded + "=" * (-len(encoded) % 4)))
    found: list[object] = []
    for detail in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo, error_details_pb2.BadRequest):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found.append(message)
    return found

"""Small helpers for svc_session's tests."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2

from parley_core.errors import details_of

T = TypeVar("T")

PASSWORD = "correct horse battery staple"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def failure(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """The error a call fails with (AssertionError when it succeeds)."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call succeeded")


def reason(error: grpc.aio.AioRpcError) -> str:
    infos = [d for d in details_of(error) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert len(infos) == 1, f"expected one ErrorInfo, got {infos}"
    return str(infos[0].reason)


def field_violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    found: dict[str, str] = {}
    for detail in details_of(error):
        if isinstance(detail, error_details_pb2.BadRequest):
            found.update({v.field: v.description for v in detail.field_violations})
    return found


def retry_delay_s(error: grpc.aio.AioRpcError) -> float | None:
    for detail in details_of(error):
        if isinstance(detail, error_details_pb2.RetryInfo):
            return float(detail.retry_delay.seconds + detail.retry_delay.nanos / 1e9)
    return None


def read_mail(mailbox: Path, email: str) -> list[dict[str, str]]:
    folder = mailbox / email
    if not folder.exists():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def reset_token_from(mail: dict[str, str]) -> str:
    line = next(line for line in mail["body"].splitlines() if line.startswith("Reset token: "))
    return line.removeprefix("Reset token: ").strip()

"""Small helpers for svc_session's tests."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc
from google.rpc import error_details_pb2
from joserfc import jwt
from joserfc.jwk import ECKey

from parley.session.v1 import session_pb2 as pb
from parley_core.errors import details_of

if TYPE_CHECKING:
    from parley.session.v1.session_pb2_grpc import SessionServiceAsyncStub
    from svc_session.app import SessionApp

T = TypeVar("T")

PASSWORD = "correct horse battery staple"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def forged_token(claims: dict[str, object]) -> str:
    """A well-formed token with whatever claims are given, signed by a key of our own."""
    key = ECKey.generate_key("P-256", parameters={"kid": "forged"})
    return jwt.encode({"alg": "ES256", "kid": "forged"}, claims, key)


def claims_of(token: str) -> dict[str, object]:
    """A token's claims, read without checking anything (to copy them into a forgery)."""
    payload = token.split(".")[1]
    return cast(dict[str, object], json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


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


def read_mail(mailbox: Path, email: str, subject: str = "") -> list[dict[str, str]]:
    """The mails delivered to email so far (whose subject contains subject), oldest first."""
    folder = mailbox / email
    if not folder.exists():
        return []
    mails = [
        json.loads(p.read_text()) for p in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    ]
    return [mail for mail in mails if subject in mail["subject"]]


async def wait_for_mail(mailbox: Path, email: str, subject: str, count: int = 1) -> list[dict[str, str]]:
    """Wait (up to 15 s) until count mails with subject have reached email; the relay is
    asynchronous."""
    deadline = time.monotonic() + 15
    while True:
        mails = read_mail(mailbox, email, subject)
        if len(mails) >= count or time.monotonic() > deadline:
            assert len(mails) >= count, f"{len(mails)} mails {subject!r} for {email}, expected {count}"
            return mails
        await asyncio.sleep(0.05)


RESET_SUBJECT = "Reset your Parley password"
VERIFY_SUBJECT = "Confirm your Parley email address"


def token_from(mail: dict[str, str], label: str) -> str:
    line = next(line for line in mail["body"].splitlines() if line.startswith(f"{label}: "))
    return line.removeprefix(f"{label}: ").strip()


def reset_token_from(mail: dict[str, str]) -> str:
    return token_from(mail, "Reset token")


async def verify_email(stub: SessionServiceAsyncStub, mailbox: Path, email: str) -> pb.User:
    """Open the verification mail sent at registration, as its owner would."""
    [mail, *_] = await wait_for_mail(mailbox, email, VERIFY_SUBJECT)
    reply = await stub.VerifyEmail(
        pb.VerifyEmailRequest(verification_token=token_from(mail, "Verification token"))
    )
    return reply.user


async def register_verified(
    stub: SessionServiceAsyncStub, mailbox: Path, email: str, password: str = PASSWORD
) -> pb.RegisterResponse:
    """A registered account whose owner has verified the email."""
    registered = await stub.Register(pb.RegisterRequest(email=email, password=password, display_name="Ada"))
    await verify_email(stub, mailbox, email)
    return registered


async def outbox_drained(app: SessionApp) -> None:
    """Wait (up to 15 s) until the relay has worked through every queued mail."""
    deadline = time.monotonic() + 15
    while await app.stores.proofs.pending():
        assert time.monotonic() < deadline, "the outbox did not drain"
        await asyncio.sleep(0.05)

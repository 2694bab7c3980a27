"""`parley chat`'s sign-in against a stand-in for SessionService: a stored session is reused,
refreshed when its access token runs out and forgotten when the server ends it; an API key
is exchanged and never stored."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from parley.session.v1 import session_pb2
from parley_client._auth import NotSignedInError, SignIn, StoredSession, TokenStore
from tests.unit.test_chat_cli import rpc_error

TARGET = "127.0.0.1:27000"


def stamp(seconds_from_now: float) -> Timestamp:
    value = Timestamp()
    value.FromNanoseconds(int((time.time() + seconds_from_now) * 1e9))
    return value


def credentials(n: int) -> session_pb2.Credentials:
    return session_pb2.Credentials(
        access_token=f"a-{n}",
        access_token_expire_time=stamp(900),
        refresh_token=f"r-{n}",
        refresh_token_expire_time=stamp(86_400),
    )


class FakeSession:
    def __init__(self) -> None:
        self.requests: list[object] = []
        self.refresh_error: grpc.aio.AioRpcError | None = None

    async def RefreshToken(self, request: session_pb2.RefreshTokenRequest, **_: Any) -> Any:
        self.requests.append(request)
        if self.refresh_error is not None:
            raise self.refresh_error
        return session_pb2.RefreshTokenResponse(credentials=credentials(len(self.requests) + 1))

    async def Login(self, request: session_pb2.LoginRequest, **_: Any) -> Any:
        self.requests.append(request)
        user = session_pb2.User(name="users/u1", email="ada@example.com")
        if request.HasField("api_key"):
            return session_pb2.LoginResponse(
                user=user,
                credentials=session_pb2.Credentials(access_token="k-1", access_token_expire_time=stamp(900)),
            )
        return session_pb2.LoginResponse(user=user, credentials=credentials(1))


def sign_in(tmp_path: Path, **kwargs: Any) -> tuple[SignIn, FakeSession, TokenStore]:
    session = FakeSession()
    store = TokenStore(tmp_path / "credentials.json")
    return SignIn(cast(Any, session), TARGET, store, **kwargs), session, store


def stored(access_in_s: float) -> StoredSession:
    return StoredSession("ada@example.com", "r-0", time.time() + 86_400, "a-0", time.time() + access_in_s)


async def test_a_stored_access_token_that_is_still_good_is_used_as_it_is(tmp_path: Path) -> None:
    signed, session, store = sign_in(tmp_path)
    store.save(TARGET, stored(600))
    assert await signed.restore()
    assert await signed.metadata() == (("authorization", "Bearer a-0"),)
    assert session.requests == []
    assert signed.email == "ada@example.com"


async def test_an_expiring_access_token_is_refreshed_and_the_new_refresh_token_kept(tmp_path: Path) -> None:
    signed, session, store = sign_in(tmp_path)
    store.save(TARGET, stored(30))  # inside the minute before expiry
    assert await signed.metadata() == (("authorization", "Bearer a-2"),)
    assert session.requests == [session_pb2.RefreshTokenRequest(refresh_token="r-0")]
    saved = store.load(TARGET)
    assert saved is not None
    assert (saved.refresh_token, saved.access_token) == ("r-2", "a-2")


async def test_a_session_the_server_ended_is_forgotten(tmp_path: Path) -> None:
    signed, session, store = sign_in(tmp_path)
    store.save(TARGET, stored(0))
    session.refresh_error = rpc_error(grpc.StatusCode.UNAUTHENTICATED, "session revoked")
    assert not await signed.restore()
    assert store.load(TARGET) is None
    with pytest.raises(NotSignedInError):
        await signed.metadata()


async def test_a_password_sign_in_is_stored(tmp_path: Path) -> None:
    signed, session, store = sign_in(tmp_path)
    assert not await signed.restore()
    await signed.with_password("ada@example.com", "correct horse battery")
    [login] = session.requests
    assert isinstance(login, session_pb2.LoginRequest)
    assert login.password == session_pb2.PasswordCredential(
        email="ada@example.com", password="correct horse battery"
    )
    saved = store.load(TARGET)
    assert saved is not None
    assert (saved.email, saved.refresh_token) == ("ada@example.com", "r-1")
    assert await signed.metadata() == (("authorization", "Bearer a-1"),)


async def test_an_api_key_is_exchanged_and_nothing_is_stored(tmp_path: Path) -> None:
    signed, session, store = sign_in(tmp_path, api_key="pk_secret")
    assert await signed.metadata() == (("authorization", "Bearer k-1"),)
    assert await signed.metadata() == (("authorization", "Bearer k-1"),)
    [login] = session.requests
    assert isinstance(login, session_pb2.LoginRequest)
    assert login.api_key == "pk_secret"
    assert not store.path.exists()

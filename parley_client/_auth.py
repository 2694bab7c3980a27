"""Signing in, and an access token for every call.

A person signs in once with an email and password; the session's refresh token is kept in
a file only its owner can read (`$XDG_CONFIG_HOME/parley/credentials.json`, mode 0600), so
the next run signs in without asking. Access tokens are short-lived JWTs: the client
exchanges the refresh token for a new one shortly before the old one expires. Refresh
tokens are single use (presenting one twice ends the session), so two clients sharing the
file take a lock around each exchange and re-read the file inside it.

A partner's program uses an API key instead: `Login` exchanges it for an access token
limited to the key's scopes, and again when that token expires. Nothing is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc

from parley.session.v1 import session_pb2
from parley_client._errors import from_rpc_error

if TYPE_CHECKING:
    from parley.session.v1.session_pb2_grpc import SessionServiceAsyncStub

__all__ = ["Metadata", "NotSignedInError", "SignIn", "StoredSession", "TokenStore", "default_store_path"]

Metadata = tuple[tuple[str, str], ...]

USER_AGENT = "parley-chat/0.1 (grpcio)"
#: Renew an access token this long before it expires, so no call carries one that expires
#: on the way.
RENEW_BEFORE_S = 60.0
#: Unary calls to svc_session give up after this long.
CALL_TIMEOUT_S = 10.0


T = TypeVar("T")


async def _unary(call: Awaitable[T]) -> T:
    """The call's reply; a failure becomes a ChatError (a wrong password, a rate limit)."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error) from None


class NotSignedInError(Exception):
    """No stored session works (none, expired, or ended elsewhere): ask for the password."""


def default_store_path() -> Path:
    """`$XDG_CONFIG_HOME/parley/credentials.json`, `~/.config/...` when the variable is unset."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "parley" / "credentials.json"


@dataclass
class StoredSession:
    """What the file keeps per endpoint. Times are seconds since the epoch."""

    email: str
    refresh_token: str
    refresh_expires_at: float
    access_token: str = ""
    access_expires_at: float = 0.0

    @classmethod
    def from_credentials(cls, email: str, credentials: session_pb2.Credentials) -> StoredSession:
        return cls(
            email=email,
            refresh_token=credentials.refresh_token,
            refresh_expires_at=credentials.refresh_token_expire_time.ToNanoseconds() / 1e9,
            access_token=credentials.access_token,
            access_expires_at=credentials.access_token_expire_time.ToNanoseconds() / 1e9,
        )


class TokenStore:
    """One JSON file of sessions keyed by endpoint (`host:port`), readable by its owner only.

    Calls here touch a small local file; the one that can wait (the lock) is run in a
    thread by the caller.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, target: str) -> StoredSession | None:
        try:
            saved = json.loads(self.path.read_text())["sessions"][target]
            return StoredSession(**saved)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, target: str, session: StoredSession | None) -> None:
        """Write (or, with None, drop) target's session; the file is replaced atomically."""
        try:
            everything = json.loads(self.path.read_text())
            sessions = dict(everything["sessions"])
        except (OSError, ValueError, KeyError, TypeError):
            sessions = {}
        if session is None:
            sessions.pop(target, None)
        else:
            sessions[target] = asdict(session)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkstemp creates the file with mode 0600: the tokens are never readable by others,
        # not even for a moment.
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".credentials-")
        try:
            with os.fdopen(fd, "w") as file:
                json.dump({"version": 1, "sessions": sessions}, file, indent=2)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock (a second client refreshing waits here)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        with open(os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)) as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(file.fileno(), fcntl.LOCK_UN)


class SignIn:
    """The caller's identity for one endpoint: `metadata()` gives every call its token."""

    def __init__(
        self,
        session: SessionServiceAsyncStub,
        target: str,
        store: TokenStore,
        *,
        api_key: str = "",
    ) -> None:
        self._session = session
        self._target = target
        self._store = store
        self._api_key = api_key
        self._access_token = ""
        self._expires_at = 0.0
        self._refresh_lock = asyncio.Lock()
        #: The email of the stored session, a default for the password prompt.
        self.email = ""

    async def metadata(self) -> Metadata:
        """Call metadata with an access token that is good for at least a minute."""
        if time.time() > self._expires_at - RENEW_BEFORE_S:
            await self.renew()
        return (("authorization", f"Bearer {self._access_token}"),)

    async def renew(self) -> None:
        """A new access token: from the API key, or from the stored session's refresh token.

        Raises NotSignedInError when there is neither (or the session has ended).
        """
        async with self._refresh_lock:
            if self._api_key:
                await self._exchange_api_key()
            else:
                await self._refresh()

    async def restore(self) -> bool:
        """Whether a stored session (or an API key) can sign this client in."""
        try:
            await self.metadata()
        except NotSignedInError:
            return False
        return True

    async def with_password(self, email: str, password: str) -> None:
        reply = await _unary(
            self._session.Login(
                session_pb2.LoginRequest(
                    password=session_pb2.PasswordCredential(email=email, password=password),
                    user_agent=USER_AGENT,
                ),
                timeout=CALL_TIMEOUT_S,
            )
        )
        await self._keep(reply.user.email or email, reply.credentials)

    async def register(self, email: str, password: str, display_name: str) -> session_pb2.User:
        """Create the account and sign in; the address still needs verifying (a mail)."""
        reply = await _unary(
            self._session.Register(
                session_pb2.RegisterRequest(email=email, password=password, display_name=display_name),
                timeout=CALL_TIMEOUT_S,
            )
        )
        await self._keep(reply.user.email or email, reply.credentials)
        return reply.user

    async def sign_out(self) -> None:
        """End the stored session on the server and forget it here."""
        if self._api_key:
            return
        with contextlib.suppress(NotSignedInError, grpc.aio.AioRpcError):
            await self._session.Logout(
                session_pb2.LogoutRequest(), metadata=await self.metadata(), timeout=CALL_TIMEOUT_S
            )
        await asyncio.to_thread(self._forget)

    # ------------------------------------------------------------------------------------

    async def _exchange_api_key(self) -> None:
        reply = await _unary(
            self._session.Login(
                session_pb2.LoginRequest(api_key=self._api_key, user_agent=USER_AGENT), timeout=CALL_TIMEOUT_S
            )
        )
        self._use(reply.credentials.access_token, reply.credentials.access_token_expire_time.ToNanoseconds())

    async def _refresh(self) -> None:
        # Another client may hold the lock while it rotates the same refresh token: wait for
        # it in a thread, then read what it left.
        lock = self._store.locked()
        await asyncio.to_thread(lock.__enter__)
        try:
            saved = self._store.load(self._target)
            if saved is None or saved.refresh_expires_at <= time.time():
                raise NotSignedInError
            self.email = saved.email
            if saved.access_expires_at - RENEW_BEFORE_S > time.time() and saved.access_token != (
                self._access_token
            ):
                # Refreshed by another client (or on the last run) and still good.
                self._access_token, self._expires_at = saved.access_token, saved.access_expires_at
                return
            try:
                reply = await self._session.RefreshToken(
                    session_pb2.RefreshTokenRequest(refresh_token=saved.refresh_token), timeout=CALL_TIMEOUT_S
                )
            except grpc.aio.AioRpcError as error:
                if error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    self._store.save(self._target, None)
                    raise NotSignedInError from None
                raise from_rpc_error(error) from None
            fresh = StoredSession.from_credentials(saved.email, reply.credentials)
            self._store.save(self._target, fresh)
            self._access_token, self._expires_at = fresh.access_token, fresh.access_expires_at
        finally:
            lock.__exit__(None, None, None)

    async def _keep(self, email: str, credentials: session_pb2.Credentials) -> None:
        fresh = StoredSession.from_credentials(email, credentials)
        self.email = email
        self._access_token, self._expires_at = fresh.access_token, fresh.access_expires_at
        await asyncio.to_thread(self._store.save, self._target, fresh)

    def _use(self, token: str, expires_ns: int) -> None:
        self._access_token, self._expires_at = token, expires_ns / 1e9

    def _forget(self) -> None:
        with self._store.locked():
            self._store.save(self._target, None)
        self._access_token, self._expires_at = "", 0.0

"""`parley chat`: a terminal client for Parley's public gRPC API, and the example to copy.

Everything here goes through the public endpoint (Envoy) with the stubs generated from
`protos/` (`gen/python/parley`, grpcio's asyncio flavour); it imports nothing else of Parley.
A partner's first hour looks like this:

1. **Sign in.** `SessionService.Login` with an email and password (or `Register`) returns
   a short-lived access token and a refresh token; every other call sends the access token
   as `authorization: Bearer ...` metadata. An API key is exchanged the same way
   (`LoginRequest.api_key`). See `_auth.py`: the refresh token is kept in a file only its
   owner can read, so the next run does not ask again.

2. **Pick a model.** `ChatService.ListModels` lists the models the caller may use, with
   their health. A turn that names no model uses the conversation's model (the catalog's
   default for a new conversation).

3. **Run a turn.** Open the bidirectional `Chat` stream, write
   `ChatRequest(start=TurnInput(...))` and read `TurnEvent`s: `started` (the turn's name,
   and with it the conversation's, for a turn that started one, and the monthly budgets
   whose soft limit the turn could pass, to warn of), then `delta`s to print as
   they arrive, then `completed` with the finish reason, token usage and a cost estimate.
   Each send carries a fresh `idempotency_key`; a send retried with the same key starts no
   second turn.

4. **Cancel.** Write `ChatRequest(cancel_turn=<turn name>)` on the same stream (or call
   `CancelTurn` when the stream is gone) and keep reading: the turn ends with
   `FINISH_REASON_CANCELLED`, and what was generated so far is kept.

5. **Resume.** Events are numbered from 1 without gaps. When the connection drops
   (UNAVAILABLE, or a stream that ends before `completed`), open a new stream and write
   `ChatRequest(resume=ResumeTurnRequest(name=..., after_sequence=<last event shown>))`:
   the server sends the rest, nothing twice. Before `started` arrived the client cannot name
   the turn, so it sends the same `start` again, same idempotency key.

6. **Search.** `HistoryService.SearchMessages(parent="users/me", query=...)` finds the
   caller's own messages by words (`SEARCH_MODE_FULL_TEXT`), by meaning
   (`SEARCH_MODE_SEMANTIC`) or both (`SEARCH_MODE_HYBRID`, the default). A hit holds the
   message, its conversation's title, a plain-text snippet, and where the query's words are
   in that snippet as ranges of code points (`_search.py`). A message's name is its
   conversation's name followed by `/messages/{m}`: `--conversation` continues it. A
   message is indexed moments after it is written, so the newest may not be found yet.
   An API key searches only with the `history.read` scope.

7. **Errors.** A failed call carries `google.rpc` details in the `grpc-status-details-bin`
   trailer: an ErrorInfo reason, and RetryInfo when waiting helps (`_errors.py`).

This client opens one `Chat` stream per turn rather than one for the whole session: each
stream starts with a fresh access token, and an idle prompt holds no stream open for the
edge's idle timeout to close.

Usage: `parley chat [--model NAME] [--conversation NAME] [--message TEXT ...] [--json]`,
`parley chat --search TEXT [--search-mode full_text|semantic|hybrid] [--json]`;
`parley chat --help` lists every option.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import signal
import sys
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TextIO, cast

import grpc

from parley.chat.v1 import chat_pb2, chat_pb2_grpc
from parley.history.v1 import history_pb2_grpc
from parley.session.v1 import session_pb2_grpc
from parley_client._auth import USER_AGENT, NotSignedInError, SignIn, TokenStore, default_store_path
from parley_client._errors import ChatError, from_rpc_error
from parley_client._render import JsonView, TextView, View
from parley_client._search import MODES, PAGE_SIZE, SearchClient, conversation_of_message
from parley_client._turn import Backoff, TurnProgress

if TYPE_CHECKING:
    from parley.chat.v1.chat_pb2_grpc import ChatServiceAsyncStub
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub
    from parley.session.v1.session_pb2_grpc import SessionServiceAsyncStub

__all__ = ["ChatClient", "build_parser", "main"]

DESCRIPTION = "Chat with Parley's models from a terminal, through the public gRPC API."
DEFAULT_TARGET = "127.0.0.1:20000"
#: Exit statuses: a turn or call failed; the user interrupted (as shells report SIGINT).
EXIT_FAILED, EXIT_INTERRUPTED = 1, 130
#: Statuses after which a turn's stream is opened again: the connection, not the request,
#: failed.
RECONNECT_ON = frozenset({grpc.StatusCode.UNAVAILABLE})
#: Unary calls give up after this long; streams have no deadline (an answer may take
#: minutes) and rely on the server's own timeouts.
CALL_TIMEOUT_S = 10.0
#: How long, after the last event, the client waits for the server to close the stream.
CLOSE_TIMEOUT_S = 5.0
#: Reconnect soon after a drop: grpcio's defaults wait a second or more and grow to minutes.
CHANNEL_OPTIONS = (
    ("grpc.primary_user_agent", USER_AGENT),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


_ChatCall = grpc.aio.StreamStreamCall[chat_pb2.ChatRequest, chat_pb2.ChatResponse]


def open_channel(target: str, *, tls: bool) -> grpc.aio.Channel:
    if tls:
        return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options=CHANNEL_OPTIONS)
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


def stubs(channel: grpc.aio.Channel) -> tuple[ChatServiceAsyncStub, SessionServiceAsyncStub]:
    """Typed asyncio stubs: grpcio generates one class for both channel kinds, mypy-protobuf
    describes the asyncio flavour as a separate, type-only class."""
    chat = cast("ChatServiceAsyncStub", chat_pb2_grpc.ChatServiceStub(channel))
    session = cast("SessionServiceAsyncStub", session_pb2_grpc.SessionServiceStub(channel))
    return chat, session


def history_stub(channel: grpc.aio.Channel) -> HistoryServiceAsyncStub:
    """HistoryService's typed asyncio stub, for search (see `stubs`)."""
    return cast("HistoryServiceAsyncStub", history_pb2_grpc.HistoryServiceStub(channel))


def model_name(model: str) -> str:
    """`models/{model}` from either spelling a person types."""
    return model if not model or model.startswith("models/") else f"models/{model}"


def conversation_name(name: str) -> str:
    """`users/{u}/conversations/{c}` from a conversation's name or one of its messages'
    (what `--search` prints)."""
    return conversation_of_message(name) or name


class ChatClient:
    """A conversation with a chosen model: send turns, list models."""

    def __init__(
        self,
        chat: ChatServiceAsyncStub,
        sign_in: SignIn,
        view: View,
        *,
        model: str = "",
        conversation: str = "",
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        self.chat, self.sign_in, self.view = chat, sign_in, view
        #: The model of the next turn; empty for the conversation's (the catalog default).
        self.model = model_name(model)
        #: `users/{u}/conversations/{c}`; empty until the first turn starts a new one.
        self.conversation = conversation
        self._backoff = backoff

    async def list_models(self) -> list[chat_pb2.Model]:
        models: list[chat_pb2.Model] = []
        page_token = ""
        while True:
            try:
                page = await self.chat.ListModels(
                    chat_pb2.ListModelsRequest(page_size=200, page_token=page_token),
                    metadata=await self.sign_in.metadata(),
                    timeout=CALL_TIMEOUT_S,
                )
            except grpc.aio.AioRpcError as error:
                raise from_rpc_error(error) from None
            models.extend(page.models)
            page_token = page.next_page_token
            if not page_token:
                return models

    async def send(self, text: str) -> TurnProgress:
        """Run one turn to its end, showing its events; Ctrl-C cancels it."""
        start = chat_pb2.TurnInput(
            conversation=self.conversation,
            text=text,
            model=self.model,
            idempotency_key=str(uuid.uuid4()),
        )
        turn = _Turn(self, start)
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, turn.interrupt)
            handled = True
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, Windows
            handled = False
        try:
            progress = await turn.run()
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGINT)
        if not self.conversation and progress.conversation:
            self.conversation = progress.conversation
            self.view.conversation(self.conversation)
        return progress


async def _write_first(call: _ChatCall, first: chat_pb2.ChatRequest) -> None:
    """Send a stream's first request; a send that lost the race with the stream's end is a
    broken stream (UNAVAILABLE), resumed like any other.

    When the edge ends a stream at once (no healthy host behind it, a reset), grpc-python's
    failed send replaces the stream's own status with INTERNAL "Internal error from Core" and
    no trailers. The request never left, so sending it again is safe (the same idempotency
    key), and the next stream reads the real status.
    """
    try:
        await call.write(first)
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.INTERNAL or error.trailing_metadata():
            raise
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE,
            error.initial_metadata(),
            error.trailing_metadata(),
            details="the stream ended before the request was sent",
        ) from error


class _Turn:
    """One turn across as many streams as it takes: reconnects, resumes, cancels."""

    def __init__(self, client: ChatClient, start: chat_pb2.TurnInput) -> None:
        self.client = client
        self.start = start
        self.progress = TurnProgress(start.idempotency_key)
        self._task = asyncio.current_task()
        self._call: _ChatCall | None = None
        #: Whether a cancel was written on the current stream, or CancelTurn succeeded.
        self._cancel_sent = False
        self._cancelled_by_call = False
        self._background: set[asyncio.Task[None]] = set()

    def interrupt(self) -> None:
        """Ctrl-C: the first cancels the turn, the second stops waiting for it to end."""
        if self.progress.interrupted:
            if self._task is not None:
                self._task.cancel()
            return
        self.progress.interrupted = True
        self.client.view.note("cancelling the turn (Ctrl-C again to stop waiting)")
        if self.progress.turn:
            self._spawn(self._cancel())

    async def run(self) -> TurnProgress:
        backoff = self.client._backoff()
        renewed = False
        while True:
            seen = self.progress.last_sequence
            try:
                await self._stream(self.progress.reopen(self.start))
                if self.progress.completed is not None:
                    return self.progress
                problem = "the stream ended before the turn did"
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.UNAUTHENTICATED and not renewed:
                    # The access token expired or was revoked since it was fetched.
                    renewed = True
                    await self.client.sign_in.renew()
                    continue
                if error.code() not in RECONNECT_ON:
                    raise from_rpc_error(error) from None
                problem = str(from_rpc_error(error))
            if self.progress.last_sequence > seen:
                backoff, renewed = self.client._backoff(), False  # the last stream made progress
            delay = backoff.next_delay()
            if delay is None:
                raise ChatError(f"lost the connection and could not get it back: {problem}")
            where = f"after event {self.progress.last_sequence}" if self.progress.turn else "the send"
            self.client.view.note(f"connection lost ({problem}); resuming {where} in {delay:.1f} s")
            await asyncio.sleep(delay)

    async def _stream(self, first: chat_pb2.ChatRequest) -> None:
        """One stream of the turn, until the turn completes or the stream breaks."""
        call = self.client.chat.Chat(metadata=await self.client.sign_in.metadata())
        self._call, self._cancel_sent = call, self._cancelled_by_call
        try:
            await _write_first(call, first)
            if self.progress.interrupted and self.progress.turn:
                await self._cancel()
            async for response in call:
                event = response.event
                if not self.progress.accept(event):
                    continue
                self.client.view.event(event, self.progress)
                if self.progress.completed is not None:
                    await self._close(call)
                    return
                if event.HasField("started") and self.progress.interrupted:
                    await self._cancel()
        finally:
            self._call = None
            if not call.done():
                call.cancel()

    async def _close(self, call: _ChatCall) -> None:
        """Half-close and let the server end the stream (it has no more turns to send)."""
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError, TimeoutError):
            await call.done_writing()
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await call.code()

    async def _cancel(self) -> None:
        """Cancel on the live stream; with none, through CancelTurn."""
        if self._cancel_sent or self.progress.completed is not None:
            return
        self._cancel_sent = True
        call = self._call
        if call is not None:
            try:
                await call.write(chat_pb2.ChatRequest(cancel_turn=self.progress.turn))
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                self._cancel_sent = False  # the stream broke: the resumed one cancels
            return
        try:
            await self.client.chat.CancelTurn(
                chat_pb2.CancelTurnRequest(name=self.progress.turn),
                metadata=await self.client.sign_in.metadata(),
                timeout=CALL_TIMEOUT_S,
            )
            self._cancelled_by_call = True
        except (grpc.aio.AioRpcError, ChatError, NotSignedInError):
            self._cancel_sent = False

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


# The command line ---------------------------------------------------------------------------


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """`parley chat`'s options (added to parser, for `parley`'s subcommand)."""
    parser = parser or argparse.ArgumentParser(prog="parley chat", description=DESCRIPTION)
    parser.add_argument(
        "--target",
        default=os.environ.get("PARLEY_TARGET", DEFAULT_TARGET),
        help=f"the public endpoint, host:port (PARLEY_TARGET; default {DEFAULT_TARGET})",
    )
    parser.add_argument("--tls", action="store_true", help="connect with TLS (system root certificates)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("PARLEY_API_KEY", ""),
        help="sign in with this API key instead of a password (PARLEY_API_KEY)",
    )
    parser.add_argument("--email", default="", help="the account's email (asked for when needed)")
    parser.add_argument("--register", action="store_true", help="create the account, then chat")
    parser.add_argument("--display-name", default="", help="with --register: the name shown")
    parser.add_argument("--sign-out", action="store_true", help="end the stored session and forget it")
    parser.add_argument("--model", default="", help="the model (default: the conversation's)")
    parser.add_argument("--models", action="store_true", help="list the models and exit")
    parser.add_argument(
        "--conversation",
        default="",
        metavar="NAME",
        help="continue users/.../conversations/... (a message name from --search names its conversation)",
    )
    parser.add_argument(
        "-m",
        "--message",
        action="append",
        default=[],
        metavar="TEXT",
        help="send this and exit (repeatable, one turn each); a piped standard input is one message",
    )
    parser.add_argument(
        "--search", metavar="TEXT", help=f"search your messages, print the best {PAGE_SIZE} hits and exit"
    )
    parser.add_argument(
        "--search-mode",
        choices=sorted(MODES),
        default="hybrid",
        help="with --search: match words (full_text), meaning (semantic) or both (default: hybrid)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print events (or search hits) as JSON lines (proto3 JSON)"
    )
    return parser


HELP = """/models          list the models
/model NAME      answer with NAME from now on
/new             start a new conversation
/search TEXT     search your messages (words and meaning)
/quit            leave (or Ctrl-D); Ctrl-C cancels an answer, or leaves at the prompt"""


class _Terminal:
    """The parts that read from a person. They run while no event loop runs, so a blocking
    `input()` or `getpass()` never stalls a stream."""

    def __init__(self, args: argparse.Namespace, stdin: TextIO) -> None:
        self.args = args
        self.interactive = stdin.isatty()

    def password(self, email: str, *, twice: bool = False) -> str:
        from_env = os.environ.get("PARLEY_PASSWORD", "")
        if from_env:
            return from_env
        if not self.interactive:
            raise ChatError(
                "not signed in: run `parley chat` on a terminal once, or use --api-key (PARLEY_API_KEY)"
            )
        password = getpass.getpass(f"password for {email}: ")
        if twice and getpass.getpass("the same again: ") != password:
            raise ChatError("the passwords differ")
        return password

    def email(self, default: str) -> str:
        if self.args.email:
            return str(self.args.email)
        if not self.interactive:
            if default:
                return default
            raise ChatError("not signed in: pass --email (and PARLEY_PASSWORD), or use --api-key")
        answer = input(f"email{f' [{default}]' if default else ''}: ").strip()
        return answer or default


def main(argv: Sequence[str] | None = None, *, args: argparse.Namespace | None = None) -> int:
    """Run `parley chat`; the exit status: 0, EXIT_FAILED or EXIT_INTERRUPTED."""
    args = args or build_parser().parse_args(argv)
    view: View = (
        JsonView(sys.stdout, sys.stderr)
        if args.json
        else TextView(
            sys.stdout,
            sys.stderr,
            color=sys.stderr.isatty() and "NO_COLOR" not in os.environ,
            terminal=sys.stdout.isatty() and sys.stderr.isatty(),
        )
    )
    with asyncio.Runner() as runner:
        channel = runner.run(_channel(args))
        try:
            return _session(runner, channel, args, view)
        except ChatError as error:
            view.error(error)
            return EXIT_FAILED
        except NotSignedInError:
            view.error(ChatError("the session has ended (signed out elsewhere?): sign in again"))
            return EXIT_FAILED
        except (KeyboardInterrupt, asyncio.CancelledError):
            print(file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            runner.run(channel.close())


async def _channel(args: argparse.Namespace) -> grpc.aio.Channel:
    return open_channel(args.target, tls=args.tls)


def _session(runner: asyncio.Runner, channel: grpc.aio.Channel, args: argparse.Namespace, view: View) -> int:
    chat, session = stubs(channel)
    store = TokenStore(default_store_path())
    sign_in = SignIn(session, args.target, store, api_key=args.api_key)
    terminal = _Terminal(args, sys.stdin)
    if args.sign_out:
        runner.run(sign_in.sign_out())
        view.note(f"signed out of {args.target}")
        return 0
    _sign_in(runner, sign_in, terminal, args, view)

    search = SearchClient(history_stub(channel), sign_in, timeout_s=CALL_TIMEOUT_S)
    if args.search is not None:
        _search(runner, search, view, args.search, args.search_mode)
        return 0
    client = ChatClient(
        chat, sign_in, view, model=args.model, conversation=conversation_name(args.conversation)
    )
    if args.models:
        view.models(runner.run(client.list_models()), client.model)
        return 0
    messages: list[str] = list(args.message)
    if not messages and not sys.stdin.isatty():
        text = sys.stdin.read().strip()
        messages = [text] if text else []
    if messages or not terminal.interactive:
        return _scripted(runner, client, messages)
    return _interactive(runner, client, search, view)


def _sign_in(
    runner: asyncio.Runner, sign_in: SignIn, terminal: _Terminal, args: argparse.Namespace, view: View
) -> None:
    if args.register:
        email = terminal.email("")
        password = terminal.password(email, twice=True)
        name = args.display_name or email.split("@")[0]
        user = runner.run(sign_in.register(email, password, name))
        view.note(f"welcome, {user.display_name}: confirm your address with the link mailed to {user.email}")
        return
    if runner.run(sign_in.restore()):
        return
    email = terminal.email(sign_in.email)
    runner.run(sign_in.with_password(email, terminal.password(email)))


def _scripted(runner: asyncio.Runner, client: ChatClient, messages: list[str]) -> int:
    for text in messages:
        progress = runner.run(client.send(text))
        if progress.interrupted:
            return EXIT_INTERRUPTED
        if progress.completed is None or progress.completed.finish_reason == chat_pb2.FINISH_REASON_ERROR:
            return EXIT_FAILED
    return 0


def _search(
    runner: asyncio.Runner, search: SearchClient, view: View, query: str, mode: str = "hybrid"
) -> None:
    """One page of hits for query, shown."""
    reply = runner.run(search.search(query, mode))
    view.hits(reply.hits, more=bool(reply.next_page_token))


def _interactive(runner: asyncio.Runner, client: ChatClient, search: SearchClient, view: View) -> int:
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401 - line editing and history for input()
    view.note(f"model {client.model.removeprefix('models/') or '(default)'}; /help lists the commands")
    while True:
        try:
            line = input("> ").strip()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if not line:
            continue
        command, _, rest = line.partition(" ")
        try:
            if command in ("/quit", "/exit"):
                return 0
            elif command == "/help":
                view.note(HELP)
            elif command == "/models":
                view.models(runner.run(client.list_models()), client.model)
            elif command == "/model":
                if not rest.strip():
                    view.note("usage: /model NAME (/models lists them)")
                    continue
                client.model = model_name(rest.strip())
                view.note(f"model {rest.strip()}")
            elif command == "/new":
                client.conversation = ""
                view.note("the next message starts a new conversation")
            elif command == "/search":
                if not rest.strip():
                    view.note("usage: /search TEXT")
                    continue
                _search(runner, search, view, rest.strip())
            elif command.startswith("/") and " " not in command and len(command) > 1:
                view.note(f"unknown command {command}; /help lists them")
            else:
                runner.run(client.send(line))
        except ChatError as error:
            view.error(error)
        except (KeyboardInterrupt, asyncio.CancelledError):
            view.note("stopped waiting")

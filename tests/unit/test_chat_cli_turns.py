"""`parley chat`'s turns against a scripted stand-in for ChatService (no server, no network):
a broken stream resumes after the last event shown, a send broken before its turn had a name
is sent again with the same key, Ctrl-C cancels on the stream, errors become one line."""

from __future__ import annotations

import asyncio
import io
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import grpc
import pytest

from parley.chat.v1 import chat_pb2
from parley_client._auth import SignIn
from parley_client._errors import ChatError
from parley_client._render import TextView
from parley_client._turn import Backoff
from parley_client.chat import ChatClient
from tests.unit.test_chat_cli import TURN, completed, delta, rpc_error, started

_END = object()


class FakeCall:
    """One Chat stream: what the client wrote, and what the script sends back."""

    def __init__(self, chat: FakeChat, metadata: Any) -> None:
        self.chat = chat
        self.metadata = metadata
        self.requests: list[chat_pb2.ChatRequest] = []
        self.replies: asyncio.Queue[object] = asyncio.Queue()
        self.finished = False
        self.half_closed = False

    def send(self, *items: chat_pb2.TurnEvent | grpc.aio.AioRpcError) -> None:
        for item in items:
            self.replies.put_nowait(item)

    def end(self) -> None:
        self.replies.put_nowait(_END)

    async def write(self, request: chat_pb2.ChatRequest) -> None:
        if self.finished:
            raise asyncio.InvalidStateError("the RPC has finished")
        if self.chat.write_errors:
            self.finished = True
            raise self.chat.write_errors.pop(0)
        self.requests.append(request)
        self.chat.script(self, request)

    async def done_writing(self) -> None:
        self.half_closed = True
        self.end()

    def __aiter__(self) -> AsyncIterator[chat_pb2.ChatResponse]:
        return self._responses()

    async def _responses(self) -> AsyncIterator[chat_pb2.ChatResponse]:
        while True:
            item = await self.replies.get()
            if item is _END:
                self.finished = True
                return
            if isinstance(item, grpc.aio.AioRpcError):
                self.finished = True
                raise item
            yield chat_pb2.ChatResponse(event=cast(chat_pb2.TurnEvent, item))

    async def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.OK

    def done(self) -> bool:
        return self.finished

    def cancel(self) -> bool:
        self.finished = True
        return True


class FakeChat:
    """ChatService's stub, with a script that answers each request written."""

    def __init__(self, script: Callable[[FakeCall, chat_pb2.ChatRequest], None]) -> None:
        self.script = script
        self.calls: list[FakeCall] = []
        self.cancelled: list[str] = []
        #: Raised by the next writes, one each (a send that failed before it left).
        self.write_errors: list[grpc.aio.AioRpcError] = []

    def Chat(self, metadata: Any = None) -> FakeCall:
        call = FakeCall(self, metadata)
        self.calls.append(call)
        return call

    async def CancelTurn(self, request: chat_pb2.CancelTurnRequest, **_: Any) -> chat_pb2.CancelTurnResponse:
        self.cancelled.append(request.name)
        return chat_pb2.CancelTurnResponse(cancelled=True)


class FakeSignIn:
    def __init__(self) -> None:
        self.token = "t-1"
        self.renewed = 0

    async def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    async def renew(self) -> None:
        self.renewed += 1
        self.token = f"t-{self.renewed + 1}"


def quick() -> Backoff:
    return Backoff(first_s=0.001, most_s=0.002, window_s=2.0)


def client(chat: FakeChat, **kwargs: Any) -> tuple[ChatClient, io.StringIO, io.StringIO, FakeSignIn]:
    out, err = io.StringIO(), io.StringIO()
    sign_in = FakeSignIn()
    made = ChatClient(
        cast(Any, chat),
        cast(SignIn, sign_in),
        TextView(out, err, color=False),
        backoff=quick,
        **kwargs,
    )
    return made, out, err, sign_in


def unavailable() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details="Socket closed"
    )


async def test_a_turn_streams_its_answer_and_names_the_new_conversation() -> None:
    def script(call: FakeCall, request: chat_pb2.ChatRequest) -> None:
        if request.HasField("start"):
            call.send(started(), delta(2, "you said:"), delta(3, " hello"), completed(4))

    chat = FakeChat(script)
    made, out, err, _ = client(chat, model="parley-scripted")
    progress = await made.send("hello")
    [call] = chat.calls
    start = call.requests[0].start
    assert (start.text, start.model, start.conversation) == ("hello", "models/parley-scripted", "")
    assert len(start.idempotency_key) == 36
    assert call.half_closed
    assert out.getvalue() == "you said: hello\n"
    assert made.conversation == "users/u1/conversations/c1"
    assert progress.text == "you said: hello"
    assert "continue it with --conversation users/u1/conversations/c1" in err.getvalue()


async def test_a_broken_stream_resumes_after_the_last_event_shown() -> None:
    def script(call: FakeCall, request: chat_pb2.ChatRequest) -> None:
        if request.HasField("start"):
            call.send(started(), delta(2, "one"), delta(3, " two"), unavailable())
        elif request.HasField("resume"):
            # The server may send from an earlier event than asked; nothing is shown twice.
            call.send(delta(3, " two"), delta(4, " three"), completed(5))

    chat = FakeChat(script)
    made, out, err, _ = client(chat)
    await made.send("count")
    assert [c.requests[0].WhichOneof("action") for c in chat.calls] == ["start", "resume"]
    assert chat.calls[1].requests[0].resume == chat_pb2.ResumeTurnRequest(name=TURN, after_sequence=3)
    assert out.getvalue() == "one two three\n"
    assert "connection lost (Socket closed (UNAVAILABLE)); resuming after event 3" in err.getvalue()


async def test_a_stream_that_ends_early_is_resumed_too() -> None:
    def script(call: FakeCall, request: chat_pb2.ChatRequest) -> None:
        if request.HasField("start"):
            call.send(started(), delta(2, "one"))
            call.end()
        else:
            call.send(delta(3, " two"), completed(4))

    chat = FakeChat(script)
    made, out, _, _ = client(chat)
    await made.send("count")
    assert out.getvalue() == "one two\n"


async def test_a_send_broken_before_its_turn_had_a_name_is_sent_again_with_the_same_key() -> None:
    def script(call: FakeCall, request: chat_pb2.ChatRequest) -> None:
        if len(chat.calls) == 1:
            call.send(unavailable())
        else:
            call.send(started(), delta(2, "hi"), completed(3))

    chat = FakeChat(script)
    made, out, _, _ = client(chat)
    await made.send("hello")
    first, second = (c.requests[0] for c in chat.calls)
    assert first == second
    assert first.start.idempotency_key
    assert out.getvalue() == "hi\n"


def lost_send() -> grpc.aio.AioRpcError:
    """What grpc-python raises from a write that lost the race with the stream's end: the
    stream's own status replaced by INTERNAL, without trailers."""
    return grpc.aio.AioRpcError(
        grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata(), details="Internal error from Core"
    )


async def test_a_send_that_lost_the_race_with_the_streams_end_is_sent_again() -> None:
    def script(call: FakeCall, request: chat_pb2.ChatRequest) -> None:
        call.send(started(), delta(2, "hi"), completed(3))

    chat = FakeChat(script)
    chat.write_errors.append(lost_send())
    made, out, err, _ = client(chat)
    await made.send("hello")
    [second] = (c.requests[0] for c in chat.calls if c.requests)
    assert len(chat.calls) == 2
    assert second.start.text == "hello"
    assert out.getvalue() == "hi\n"
    assert "(the stream ended before the request was sent (UNAVAILABLE)); resuming the send" in err.getvalue()


async def test_an_internal_error_the_server_sent_is_not_retried() -> None:
    def script(call: FakeCall, request: chat_pb2.ChatRequest) -> None:
        call.send(rpc_error(grpc.StatusCode.INTERNAL, "the router failed"))

    chat = FakeChat(script)
    made, _, _, _ = client(chat)
    with pytest.raises(ChatError, match="the router failed"):
        await made.send("hello")
    assert len(chat.calls) == 1


async def test_each_send_has_a_fresh_key() -> None:
    def script(call: FakeCall, request: chat_pb2.ChatRequest) -> None:
        call.send(started(), completed(2))

    chat = FakeChat(script)
    made, _, _, _ = client(chat)
    await made.send("one")
    made.conversation = ""
    await made.send("two")
    keys = {c.requests[0].start.idempotency_key for c in chat.calls}
    assert len(keys) == 2


async def test_the_connection_given_up_after_the_window_is_one_error() -> None:
    def script(call: FakeCall, request: chat_pb2.ChatRequest) -> None:
        call.send(unavailable())

    chat = FakeChat(script)
    made, _, _, _ = client(chat)
    made._backoff = lambda: Backoff(first_s=0.001, most_s=0.002, window_s=0.05)
    with pytest.raises(ChatError) as caught:
        await made.send("hello")
    assert str(caught.value).startswith("lost the connection and could not get it back: Socket closed")
    assert len(chat.calls) > 2


async def test_a_refused_turn_is_not_retried() -> None:
    refused = rpc_error(grpc.StatusCode.NOT_FOUND, "no such conversation")

    def script(call: FakeCall, request: chat_pb2.ChatRequest) -> None:
        call.send(refused)

    chat = FakeChat(script)
    made, _, _, _ = client(chat, conversation="users/u1/conversations/gone")
    with pytest.raises(ChatError) as caught:
        await made.send("hello")
    assert str(caught.value) == "no such conversation (NOT_FOUND)"
    assert len(chat.calls) == 1


async def test_an_expired_token_is_renewed_once() -> None:
    def script(call: FakeCall, request: chat_pb2.ChatRequest) -> None:
        if call.metadata == (("authorization", "Bearer t-1"),):
            call.send(rpc_error(grpc.StatusCode.UNAUTHENTICATED, "invalid access token"))
        else:
            call.send(started(), completed(2))

    chat = FakeChat(script)
    made, _, _, sign_in = client(chat)
    await made.send("hello")
    assert sign_in.renewed == 1
    assert [c.metadata for c in chat.calls] == [
        (("authorization", "Bearer t-1"),),
        (("authorization", "Bearer t-2"),),
    ]


async def test_ctrl_c_cancels_the_turn_on_its_stream_and_keeps_the_answer() -> None:
    def script(call: FakeCall, request: chat_pb2.ChatRequest) -> None:
        if request.HasField("start"):
            call.send(started(), delta(2, "you"))
            asyncio.get_running_loop().call_later(0.01, signal.raise_signal, signal.SIGINT)
        elif request.cancel_turn == TURN:
            call.send(completed(3, chat_pb2.FINISH_REASON_CANCELLED))

    chat = FakeChat(script)
    made, out, err, _ = client(chat)
    progress = await made.send("tell me a long story")
    [call] = chat.calls
    assert [r.WhichOneof("action") for r in call.requests] == ["start", "cancel_turn"]
    assert progress.interrupted
    assert progress.completed is not None
    assert progress.completed.finish_reason == chat_pb2.FINISH_REASON_CANCELLED
    assert out.getvalue() == "you\n"
    assert "cancelled; the answer so far is kept" in err.getvalue()
    # The handler is gone with the turn: Ctrl-C at the prompt is Python's again.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


async def test_ctrl_c_while_the_stream_is_gone_cancels_with_cancel_turn() -> None:
    def script(call: FakeCall, request: chat_pb2.ChatRequest) -> None:
        if request.HasField("start"):
            call.send(started(), delta(2, "you"), unavailable())
            # Ctrl-C lands while the client waits to reconnect.
            asyncio.get_running_loop().call_soon(signal.raise_signal, signal.SIGINT)
        elif request.HasField("resume"):
            call.send(delta(3, " said"), completed(4, chat_pb2.FINISH_REASON_CANCELLED))

    chat = FakeChat(script)
    made, out, _, _ = client(chat)
    made._backoff = lambda: Backoff(first_s=0.05, most_s=0.05, window_s=2.0)
    progress = await made.send("hello")
    assert chat.cancelled == [TURN]
    # CancelTurn went through: the resumed stream does not cancel a second time.
    assert [r.WhichOneof("action") for r in chat.calls[1].requests] == ["resume"]
    assert progress.interrupted
    assert out.getvalue() == "you said\n"


async def test_ctrl_c_before_the_turn_has_a_name_cancels_once_it_has_one() -> None:
    def script(call: FakeCall, request: chat_pb2.ChatRequest) -> None:
        if request.HasField("start"):
            signal.raise_signal(signal.SIGINT)
            asyncio.get_running_loop().call_later(0.02, call.send, started())
        elif request.cancel_turn:
            call.send(completed(2, chat_pb2.FINISH_REASON_CANCELLED))

    chat = FakeChat(script)
    made, out, _, _ = client(chat)
    await made.send("hello")
    assert [r.WhichOneof("action") for r in chat.calls[0].requests] == ["start", "cancel_turn"]
    assert out.getvalue() == "\n"

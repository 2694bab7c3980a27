"""Resume and idempotency: a turn's events come back from any router, also after the router
running it was killed, with no sequence number lost or repeated; a retried send starts no
second turn."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from tritonclient.grpc.aio import InferenceServerClient

from parley.chat.v1 import chat_pb2 as pb
from parley.events.v1 import events_pb2
from parley.history.v1 import history_pb2 as hpb
from parley_core.stubs import chat_stub
from parley_stack.config import REPO_ROOT
from parley_stack.servers.services import grpc_serving
from parley_stack.testing import LocalStack
from svc_history.app import HistoryApp
from svc_router.app import RouterApp
from svc_router.settings import RouterSettings
from svc_session.app import SessionApp
from tests.integration.history.helpers import EventTap, Person, all_messages, keyed
from tests.integration.router.conftest import router_settings, write_catalog
from tests.integration.router.helpers import Transcript, collect, send, turn_input

if TYPE_CHECKING:
    import pulsar

    from parley.chat.v1.chat_pb2_grpc import ChatServiceAsyncStub
    from parley.history.v1.history_pb2_grpc import HistoryServiceAsyncStub

pytestmark = pytest.mark.integration

SLOW = "count slowly [scripted tokens_per_second=25 reply_tokens=120]"


async def _first_events(stream: Any, count: int) -> Transcript:
    transcript = Transcript()
    async for response in stream:
        transcript.events.append(response.event)
        if len(transcript.events) >= count:
            break
    return transcript


async def _scripted_requests(router_servers: LocalStack) -> int:
    host, port = router_servers.endpoint("triton", "grpc")
    client = InferenceServerClient(f"{host}:{port}")
    try:
        stats = await client.get_inference_statistics("parley-scripted", as_json=True)
    finally:
        await client.close()
    return int(stats["model_stats"][0].get("inference_count", 0))


async def test_resume_after_a_sequence_gives_the_rest_once(chat: ChatServiceAsyncStub, alice: Person) -> None:
    stream = chat.StreamTurn(pb.StreamTurnRequest(input=turn_input(SLOW)), metadata=alice.md)
    seen = await _first_events(stream, 6)
    stream.cancel()  # the connection drops; the client resumes within abandon_grace_s

    rest = await collect(
        chat.ResumeTurn(
            pb.ResumeTurnRequest(name=seen.turn, after_sequence=seen.sequences[-1]), metadata=alice.md
        )
    )
    whole = Transcript(seen.events + rest.events)
    assert whole.sequences == list(range(1, len(whole.events) + 1))
    assert whole.completed.finish_reason == pb.FINISH_REASON_STOP
    assert len(whole.text.split()) == 120
    # From 0 it replays everything, identically.
    replay = await collect(chat.ResumeTurn(pb.ResumeTurnRequest(name=seen.turn), metadata=alice.md))
    assert [e.SerializeToString() for e in replay.events] == [e.SerializeToString() for e in whole.events]


async def test_another_router_follows_a_running_turn_live(
    chat: ChatServiceAsyncStub, start_router: Callable[..., Any], alice: Person
) -> None:
    other: RouterApp = await start_router()
    stream = chat.StreamTurn(pb.StreamTurnRequest(input=turn_input(SLOW)), metadata=alice.md)
    seen = await _first_events(stream, 4)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{other.port}") as channel:
        elsewhere = await collect(
            chat_stub(channel).ResumeTurn(
                pb.ResumeTurnRequest(name=seen.turn, after_sequence=2), metadata=alice.md
            )
        )
    here = Transcript(seen.events)
    async for response in stream:
        here.events.append(response.event)
    assert [e.sequence for e in elsewhere.events] == list(range(3, len(here.events) + 1))
    assert elsewhere.events == here.events[2:]


async def test_resuming_an_unknown_or_malformed_turn_is_refused(
    chat: ChatServiceAsyncStub, alice: Person
) -> None:
    unknown = f"users/{alice.user_id}/conversations/c1/turns/00000000-0000-0000-0000-000000000000"
    for name, code in ((unknown, grpc.StatusCode.NOT_FOUND), ("turns/1", grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(chat.ResumeTurn(pb.ResumeTurnRequest(name=name), metadata=alice.md))
        assert caught.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as negative:
        await collect(
            chat.ResumeTurn(pb.ResumeTurnRequest(name=unknown, after_sequence=-1), metadata=alice.md)
        )
    assert negative.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_same_idempotency_key_twice_gives_one_message_and_one_generation(
    chat: ChatServiceAsyncStub, history: HistoryServiceAsyncStub, router_servers: LocalStack, alice: Person
) -> None:
    before = await _scripted_requests(router_servers)
    request = turn_input("only once please")
    first = await send(chat, alice, request.text, idempotency_key=request.idempotency_key)
    again = await send(chat, alice, request.text, idempotency_key=request.idempotency_key)

    assert again.turn == first.turn
    assert [e.SerializeToString() for e in again.events] == [e.SerializeToString() for e in first.events]
    messages = await all_messages(history, alice, first.conversation)
    assert [m.author for m in messages] == [hpb.AUTHOR_USER, hpb.AUTHOR_ASSISTANT]
    assert await _scripted_requests(router_servers) == before + 1


async def test_the_same_idempotency_key_sent_concurrently_gives_one_message_and_one_generation(
    chat: ChatServiceAsyncStub, history: HistoryServiceAsyncStub, router_servers: LocalStack, bob: Person
) -> None:
    first = await send(chat, bob, "a conversation to continue")
    before = await _scripted_requests(router_servers)
    request = turn_input("at the same time", first.conversation)

    transcripts = await asyncio.gather(
        *(
            send(chat, bob, request.text, first.conversation, idempotency_key=request.idempotency_key)
            for _ in range(5)
        )
    )

    assert len({t.turn for t in transcripts}) == 1
    assert all(t.text == transcripts[0].text for t in transcripts)
    assert transcripts[0].text == "you said: a conversation to continue | at the same time"
    messages = await all_messages(history, bob, first.conversation)
    assert [m.author for m in messages].count(hpb.AUTHOR_USER) == 2
    assert [m.author for m in messages].count(hpb.AUTHOR_ASSISTANT) == 2
    assert await _scripted_requests(router_servers) == before + 1


# A router process killed mid-stream ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _environment(settings: RouterSettings) -> dict[str, str]:
    """settings as the PARLEY_ROUTER_* variables a router process reads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_ROUTER_")}
    for name, value in json.loads(settings.model_dump_json()).items():
        if value is None:
            continue
        if name == "service_secret":
            value = settings.service_secret.get_secret_value() if settings.service_secret else ""
        text = value if isinstance(value, str) else json.dumps(value)
        env[f"PARLEY_ROUTER_{name.upper()}"] = text
    return env


@pytest.fixture
async def doomed_router(
    router_servers: LocalStack, session_app: SessionApp, history_app: HistoryApp, tmp_path: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """A router in a process of its own, for a test to kill."""
    port = _free_port()
    settings = router_settings(
        router_servers,
        session_app,
        history_app,
        port=port,
        jwks_url=f"http://127.0.0.1:{session_app.jwks_port}/.well-known/jwks.json",
        log_format="json",
    )
    log_path = tmp_path / "router.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "svc_router",
            env=_environment(settings),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=log,
        )
    try:
        for _ in range(300):
            if await asyncio.to_thread(grpc_serving, "127.0.0.1", port):
                break
            assert process.returncode is None, await asyncio.to_thread(log_path.read_text)
            await asyncio.sleep(0.1)
        yield process, port
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_a_router_killed_mid_stream_is_resumed_on_another_with_an_explicit_failure(
    doomed_router: tuple[asyncio.subprocess.Process, int],
    chat: ChatServiceAsyncStub,
    history: HistoryServiceAsyncStub,
    pulsar_client: pulsar.Client,
    alice: Person,
) -> None:
    process, port = doomed_router
    tap = EventTap(pulsar_client, "usage")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = chat_stub(channel).StreamTurn(
                pb.StreamTurnRequest(input=turn_input(SLOW)), metadata=alice.md
            )
            seen = await _first_events(stream, 10)
            process.send_signal(signal.SIGKILL)

            async def read_on() -> None:
                async for response in stream:
                    seen.events.append(response.event)

            with pytest.raises(grpc.aio.AioRpcError):
                await read_on()

        # Another router: what was logged after the last event seen, then the turn's end.
        rest = await collect(
            chat.ResumeTurn(
                pb.ResumeTurnRequest(name=seen.turn, after_sequence=seen.sequences[-1]), metadata=alice.md
            )
        )
        whole = Transcript(seen.events + rest.events)
        assert whole.sequences == list(range(1, len(whole.events) + 1))
        completed = whole.completed
        assert completed.finish_reason == pb.FINISH_REASON_ERROR
        assert completed.error_reason == "ROUTER_LOST"
        words = len(whole.text.split())
        assert 0 < words < 120
        assert completed.usage.output_tokens == words
        [answer] = [
            m
            for m in await all_messages(history, alice, whole.conversation)
            if m.author == hpb.AUTHOR_ASSISTANT
        ]
        assert answer.state == hpb.MESSAGE_STATE_FAILED
        assert answer.text == whole.text
        [published] = await tap.take(keyed(alice.user_id), 1)
        event = events_pb2.TurnCompleted.FromString(published.data())
        assert (event.turn, event.finish_reason, event.estimated_usage.output_tokens) == (
            seen.turn,
            "error",
            words,
        )
        assert not event.HasField("usage")  # the router's count of what was logged
        # A second resume from 0 sees the same, complete story.
        replay = await collect(chat.ResumeTurn(pb.ResumeTurnRequest(name=seen.turn), metadata=alice.md))
        assert [e.SerializeToString() for e in replay.events] == [e.SerializeToString() for e in whole.events]
    finally:
        tap.close()


# The context window ------------------------------------------------------------------------

SMALL_WINDOW = """
schema_version = 2
default_model = "parley-scripted"

[[models]]
name = "parley-scripted"
display_name = "Scripted, small window"
# 60 words in all, 20 of them the answer's: 40 for the prompt.
context_window = 60
max_output_tokens = 20
[[models.backends]]
kind = "triton"
model = "parley-scripted"
[models.tokenizer]
kind = "words"
[models.price]
currency = "USD"
input_per_million_tokens = 1
output_per_million_tokens = 1
"""


async def test_a_long_conversation_keeps_the_newest_turns_that_fit_the_window(
    start_router: Callable[..., Any], tmp_path: Path, alice: Person
) -> None:
    router: RouterApp = await start_router(catalog_path=write_catalog(tmp_path, SMALL_WINDOW))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as channel:
        chat = chat_stub(channel)
        first = await send(chat, alice, "one alpha alpha alpha")
        answers = [first]
        for word in ("two", "three", "four", "five"):
            answers.append(await send(chat, alice, f"{word} beta beta beta", first.conversation))

    # Early on the model reads everything; at the end only the newest exchanges fit.
    assert answers[1].text == "you said: one alpha alpha alpha | two beta beta beta"
    last = answers[-1].text
    assert last.endswith("| five beta beta beta")
    assert "one alpha" not in last
    kept = last.removeprefix("you said: ").split(" | ")
    assert kept == [f"{w} beta beta beta" for w in ("two", "three", "four", "five")][-len(kept) :]
    assert 1 < len(kept) < 5
    assert answers[-1].completed.usage.input_tokens <= 40

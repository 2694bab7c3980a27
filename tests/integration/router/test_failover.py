"""Failover through the whole turn: a first backend that is down or silent before its first
token is passed over without the user noticing; its breaker opens, and closes once it is back.
ListModels shows each model's health as the router sees its backends."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from parley.chat.v1 import chat_pb2 as pb
from parley_core.stubs import chat_stub
from parley_stack.testing import LocalStack
from svc_router.app import RouterApp
from svc_router.settings import BreakerSettings, OpenAIEndpoint
from tests.integration.history.helpers import Person
from tests.integration.router.conftest import write_catalog
from tests.integration.router.helpers import send
from tests.integration.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

CATALOG = """
schema_version = 2
default_model = "parley-scripted"

[[models]]
name = "parley-scripted"
display_name = "Scripted"
context_window = 2048
max_output_tokens = 1024
[[models.backends]]
kind = "triton"
model = "parley-scripted"
[models.tokenizer]
kind = "words"
[models.price]
currency = "USD"
input_per_million_tokens = 1
output_per_million_tokens = 1

[[models]]
# The llama server behind a proxy the test takes away, then parley-scripted.
name = "proxied-first"
display_name = "Proxied first"
context_window = 2048
max_output_tokens = 64
[[models.backends]]
kind = "openai"
endpoint = "proxied"
model = "smollm2"
[[models.backends]]
kind = "triton"
model = "parley-scripted"
[models.price]
currency = "USD"
input_per_million_tokens = 1
output_per_million_tokens = 1

[[models]]
# parley-scripted made to wait a minute for its first token, then the llama server.
name = "slow-first"
display_name = "Slow first"
context_window = 2048
max_output_tokens = 16
[[models.backends]]
kind = "triton"
model = "parley-scripted"
parameters = { ttft_ms = 60000 }
[[models.backends]]
kind = "openai"
endpoint = "llama"
model = "smollm2"
parameters = { temperature = 0 }
[models.price]
currency = "USD"
input_per_million_tokens = 1
output_per_million_tokens = 1

[[models]]
name = "proxied-only"
display_name = "Proxied only"
tiers = ["free", "pro"]
context_window = 2048
max_output_tokens = 64
[[models.backends]]
kind = "openai"
endpoint = "proxied"
model = "smollm2"
[models.price]
currency = "USD"
input_per_million_tokens = 1
output_per_million_tokens = 1

[[models]]
# Counted by a Triton model that is not there: the router counts with an upper bound.
name = "uncounted"
display_name = "Uncounted"
context_window = 2048
max_output_tokens = 64
[[models.backends]]
kind = "triton"
model = "parley-scripted"
[models.tokenizer]
kind = "triton"
model = "no-such-counter"
[models.price]
currency = "USD"
input_per_million_tokens = 1
output_per_million_tokens = 1

[[models]]
name = "for-pro"
display_name = "Pro only"
tiers = ["pro"]
context_window = 2048
max_output_tokens = 64
[[models.backends]]
kind = "triton"
model = "parley-scripted"
[models.price]
currency = "USD"
input_per_million_tokens = 1
output_per_million_tokens = 1
"""


def _breaker_state(router: RouterApp) -> str:
    return router.routes.breakers["openai/proxied/smollm2"].state


@pytest.fixture
async def llama_proxy(router_servers: LocalStack) -> AsyncIterator[TcpProxy]:
    router_servers.ensure("llama")
    host, port = router_servers.endpoint("llama", "http")
    proxy = TcpProxy(host, port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.cut()


@pytest.fixture
async def router(
    start_router: Callable[..., Any], llama_proxy: TcpProxy, router_servers: LocalStack, tmp_path: Path
) -> RouterApp:
    llama_port = router_servers.config.port("llama_http")
    app: RouterApp = await start_router(
        catalog_path=write_catalog(tmp_path, CATALOG),
        openai_endpoints={
            "llama": OpenAIEndpoint(base_url=f"http://127.0.0.1:{llama_port}/v1"),
            "proxied": OpenAIEndpoint(base_url=f"http://127.0.0.1:{llama_proxy.port}/v1"),
        },
        breaker=BreakerSettings(failure_threshold=2, open_s=2.0),
        first_token_timeout_s=1.5,
        health_interval_s=600,  # probes only when a test refreshes them (they would count as tries)
    )
    return app


@pytest.fixture
async def chat(router: RouterApp) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as channel:
        yield chat_stub(channel)


async def test_a_backend_that_is_down_is_passed_over_and_its_breaker_opens_then_closes(
    chat: Any, router: RouterApp, llama_proxy: TcpProxy, alice: Person
) -> None:
    await llama_proxy.cut()  # the first backend is gone
    first = await send(chat, alice, "hello there", model="models/proxied-first")
    second = await send(chat, alice, "still there?", first.conversation, model="models/proxied-first")

    # Both answered by the second backend, and nobody could tell but by the answer.
    assert first.text == "you said: hello there"
    assert second.completed.finish_reason == pb.FINISH_REASON_STOP
    assert second.started.model == "models/proxied-first"
    assert _breaker_state(router) == "open"

    await llama_proxy.start()  # back, but the breaker is open: it is not even tried
    tried = llama_proxy.accepted
    third = await send(chat, alice, "and now?", first.conversation, model="models/proxied-first")
    assert third.text.startswith("you said:")
    assert llama_proxy.accepted == tried

    await asyncio.sleep(2.2)  # open_s: the next turn is the breaker's trial, and it works
    fourth = await send(chat, alice, "What is the capital of France?", model="models/proxied-first")
    assert llama_proxy.accepted > tried
    assert not fourth.text.startswith("you said")  # smollm2 answered
    assert fourth.completed.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_MAX_TOKENS)
    assert _breaker_state(router) == "closed"


async def test_a_backend_silent_past_the_first_token_timeout_is_cancelled_and_passed_over(
    chat: Any, router_servers: LocalStack, alice: Person
) -> None:
    transcript = await send(chat, alice, "What is the capital of France?", model="models/slow-first")

    # smollm2 on the llama server answered (parley-scripted would have echoed).
    assert transcript.text.strip()
    assert not transcript.text.startswith("you said")
    # The llama server reports no prompt tokens when it streams: the router's own count bills.
    assert transcript.completed.usage.input_tokens > 0
    assert transcript.sequences == list(range(1, len(transcript.events) + 1))
    # parley-scripted saw its request cancelled when the router gave up on it.
    turn_id = transcript.turn.rsplit("/", 1)[1]
    log = router_servers.config.log_path("triton")
    pattern = rf"parley-scripted: request '{re.escape(turn_id)}' cancelled after 0 tokens"
    deadline = time.monotonic() + 10
    while not re.search(pattern, await asyncio.to_thread(log.read_text, errors="replace")):
        assert time.monotonic() < deadline, "parley-scripted never saw the cancel"
        await asyncio.sleep(0.1)


async def test_every_backend_down_ends_the_turn_as_failed_with_the_reason(
    chat: Any, llama_proxy: TcpProxy, alice: Person
) -> None:
    await llama_proxy.cut()
    transcript = await send(chat, alice, "anyone?", model="models/proxied-only")

    completed = transcript.completed
    assert completed.finish_reason == pb.FINISH_REASON_ERROR
    assert completed.error_reason == "NO_BACKEND_AVAILABLE"
    assert "127.0.0.1" not in completed.error_message
    assert transcript.text == ""


async def test_list_models_shows_health_and_only_the_callers_tier(
    chat: Any, router: RouterApp, llama_proxy: TcpProxy, alice: Person
) -> None:
    async def health() -> dict[str, int]:
        await router.routes.refresh_health()
        reply = await chat.ListModels(pb.ListModelsRequest(), metadata=alice.md)
        return {m.name: m.health for m in reply.models}

    seen = await health()
    assert "models/for-pro" not in seen  # alice is on the free tier
    assert seen["models/parley-scripted"] == pb.MODEL_HEALTH_READY
    assert seen["models/proxied-first"] == pb.MODEL_HEALTH_READY
    assert seen["models/proxied-only"] == pb.MODEL_HEALTH_READY

    await llama_proxy.cut()
    seen = await health()
    assert seen["models/proxied-first"] == pb.MODEL_HEALTH_DEGRADED
    assert seen["models/proxied-only"] == pb.MODEL_HEALTH_UNAVAILABLE
    assert seen["models/parley-scripted"] == pb.MODEL_HEALTH_READY

    page = await chat.ListModels(pb.ListModelsRequest(page_size=3), metadata=alice.md)
    assert len(page.models) == 3
    rest = await chat.ListModels(
        pb.ListModelsRequest(page_size=3, page_token=page.next_page_token), metadata=alice.md
    )
    assert [m.name for m in [*page.models, *rest.models]] == list(seen)
    with pytest.raises(grpc.aio.AioRpcError) as negative:
        await chat.ListModels(pb.ListModelsRequest(page_size=-1), metadata=alice.md)
    assert negative.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_model_whose_token_counter_is_down_still_answers(chat: Any, alice: Person) -> None:
    transcript = await send(chat, alice, "count me if you can", model="models/uncounted")

    assert transcript.text == "you said: count me if you can"
    # The model's own count, not the router's upper bound, is what is billed.
    # parley-scripted counts the ChatML words: "<|im_start|>user", 4 words, "can<|im_end|>",
    # "<|im_start|>assistant".
    assert transcript.completed.usage.input_tokens == 7

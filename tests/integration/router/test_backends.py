"""svc_router's backends on the real Triton and llama server: streams, cancel, failover, breakers, health.

The models are model_repo/'s: parley-scripted (echoes its context; its timing and failures
follow request parameters or `[scripted ...]` directives), parley-tiny and smollm2 on
Triton, and SmolLM2 behind llama-cpp-python's OpenAI-compatible server. A backend that
cannot answer is a real one: a Triton model that fails as scripted, a model Triton does not
have, or an endpoint on a closed port.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from tritonclient.grpc.aio import InferenceServerClient

from parley_core.catalog import Catalog, CatalogModel
from parley_stack.testing import LocalStack
from svc_router.backends import (
    BackendError,
    BackendEvent,
    BreakerState,
    ChatMessage,
    CircuitBreaker,
    Finish,
    Generation,
    ModelRoutes,
    NoBackendAvailable,
    OpenAIBackend,
    Piece,
    RoutedStream,
    TritonBackend,
)
from svc_router.settings import BreakerSettings, OpenAIEndpoint, RouterSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

QUESTION = (
    ChatMessage("system", "You are a helpful assistant."),
    ChatMessage("user", "What is the capital of France?"),
)
# parley-scripted's reply to QUESTION, one word per token.
ECHO = "(system: You are a helpful assistant.) you said: What is the capital of France?"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _generation(*messages: ChatMessage, max_tokens: int = 64, request_id: str = "") -> Generation:
    return Generation(
        messages=messages or QUESTION,
        max_tokens=max_tokens,
        request_id=request_id or f"router-test-{uuid.uuid4()}",
    )


def _said(text: str) -> tuple[ChatMessage, ...]:
    return (ChatMessage("user", text),)


async def _collect(events: AsyncIterator[BackendEvent]) -> tuple[str, Finish | None]:
    pieces: list[str] = []
    finish: Finish | None = None
    async for event in events:
        if isinstance(event, Piece):
            pieces.append(event.text)
        else:
            finish = event
    return "".join(pieces), finish


async def _log_match(path: Any, pattern: str, timeout_s: float = 10) -> re.Match[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_text(errors="replace"))
        if found is not None:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no line matching {pattern!r} in {path}")


async def _scripted_cancel(local_stack: LocalStack, request_id: str) -> int:
    """How many tokens parley-scripted says it had sent when it saw request_id's cancel."""
    found = await _log_match(
        local_stack.config.log_path("triton"),
        rf"parley-scripted: request '{re.escape(request_id)}' cancelled after (\d+) tokens",
    )
    return int(found.group(1))


async def _scripted_requests(triton: InferenceServerClient) -> int:
    """How many requests parley-scripted has received (Triton's own statistics)."""
    stats = await triton.get_inference_statistics("parley-scripted", as_json=True)
    return int(stats["model_stats"][0].get("inference_count", 0))


# Fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def triton_target(local_stack: LocalStack) -> str:
    local_stack.ensure("triton")
    host, port = local_stack.endpoint("triton", "grpc")
    return f"{host}:{port}"


@pytest.fixture(scope="module")
def llama_base_url(local_stack: LocalStack) -> str:
    local_stack.ensure("llama")
    host, port = local_stack.endpoint("llama", "http")
    return f"http://{host}:{port}/v1"


@pytest.fixture
async def triton(triton_target: str) -> AsyncIterator[InferenceServerClient]:
    client = InferenceServerClient(triton_target)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(connect=10.0, sock_read=60.0)) as session:
        yield session


def _model(
    name: str,
    backends: Sequence[Mapping[str, Any]],
    *,
    fallbacks: Sequence[str] = (),
    max_output_tokens: int = 1024,
) -> dict[str, Any]:
    return {
        "name": name,
        "display_name": name,
        "context_window": 2048,
        "max_output_tokens": max_output_tokens,
        "fallbacks": list(fallbacks),
        "backends": list(backends),
        "price": {"currency": "USD", "input_per_million_tokens": 0, "output_per_million_tokens": 0},
    }


def _catalog(*models: dict[str, Any]) -> Catalog:
    return Catalog.model_validate({"schema_version": 2, "default_model": models[0]["name"], "models": models})


def _triton(model: str, **parameters: bool | int | float | str) -> dict[str, Any]:
    return {"kind": "triton", "model": model, "parameters": parameters}


def _openai(endpoint: str, model: str = "smollm2", **parameters: bool | int | float | str) -> dict[str, Any]:
    return {"kind": "openai", "endpoint": endpoint, "model": model, "parameters": parameters}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


RoutesFactory = Callable[..., ModelRoutes]


@pytest.fixture
async def make_routes(triton_target: str, llama_base_url: str) -> AsyncIterator[RoutesFactory]:
    """ModelRoutes over a catalog of test models; endpoints "llama" and "closed" (nothing listens)."""
    made: list[ModelRoutes] = []

    def make(
        *models: dict[str, Any],
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        **settings: Any,
    ) -> ModelRoutes:
        config = RouterSettings(
            triton_target=triton_target,
            openai_endpoints={
                "llama": OpenAIEndpoint(base_url=llama_base_url),
                "closed": OpenAIEndpoint(base_url=f"http://127.0.0.1:{_closed_port()}/v1"),
            },
            **{"first_token_timeout_s": 20.0, "inter_token_timeout_s": 20.0, **settings},
        )
        routes = ModelRoutes(_catalog(*models), config, registry=registry, clock=clock)
        made.append(routes)
        return routes

    yield make
    for routes in made:
        await routes.close()


def _tries(registry: CollectorRegistry, backend: str, outcome: str) -> float:
    value = registry.get_sample_value(
        "parley_router_backend_tries_total", {"backend": backend, "outcome": outcome}
    )
    return value or 0.0


def _breaker_level(registry: CollectorRegistry, backend: str) -> float | None:
    return registry.get_sample_value("parley_router_backend_breaker_state", {"backend": backend})


def _state(breaker: CircuitBreaker) -> BreakerState:
    """The state as a call, so that one assertion about it does not narrow the next."""
    return breaker.state


# The Triton backend -----------------------------------------------------------------------


async def test_triton_streams_pieces_then_the_model_s_usage(triton: InferenceServerClient) -> None:
    backend = TritonBackend(triton, "parley-scripted", {"tokens_per_second": 0}, "triton/parley-scripted")

    text, finish = await _collect(backend.stream(_generation()))

    assert text == ECHO
    # parley-scripted counts the words of the ChatML the messages render to.
    chatml = (
        "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in QUESTION)
        + "<|im_start|>assistant\n"
    )
    assert finish == Finish(
        reason="stop", prompt_tokens=len(chatml.split()), completion_tokens=len(ECHO.split())
    )


async def test_triton_finish_says_length_when_max_tokens_cut_the_answer(
    triton: InferenceServerClient,
) -> None:
    backend = TritonBackend(triton, "parley-scripted", {"tokens_per_second": 0})

    text, finish = await _collect(backend.stream(_generation(max_tokens=3)))

    assert text == "(system: You are"
    assert finish is not None
    assert (finish.reason, finish.completion_tokens) == ("length", 3)


async def test_triton_smollm2_answers_with_catalog_parameters(triton: InferenceServerClient) -> None:
    # temperature 0 reaches the model as a request parameter (its default is 0.2).
    backend = TritonBackend(triton, "smollm2", {"temperature": 0})

    text, finish = await _collect(backend.stream(_generation(max_tokens=48)))

    assert "Paris" in text
    assert finish is not None
    assert finish.reason == "stop"
    assert finish.prompt_tokens > 20
    assert 0 < finish.completion_tokens < 48


async def test_a_triton_model_without_a_messages_input_gets_a_prompt(triton: InferenceServerClient) -> None:
    backend = TritonBackend(triton, "parley-tiny")

    text, finish = await _collect(backend.stream(_generation(max_tokens=5)))

    assert len(text.split()) >= 1
    assert finish is not None
    assert (finish.reason, finish.completion_tokens) == ("length", 5)
    assert finish.prompt_tokens > 0


async def test_closing_a_triton_stream_cancels_the_request_at_the_model(
    triton: InferenceServerClient, local_stack: LocalStack
) -> None:
    backend = TritonBackend(triton, "parley-scripted", {"tokens_per_second": 20, "reply_tokens": 500})
    generation = _generation(max_tokens=1000)
    events = backend.stream(generation)
    received = [await anext(events) for _ in range(3)]
    await events.aclose()

    assert all(isinstance(event, Piece) for event in received)
    generated = await _scripted_cancel(local_stack, generation.request_id)
    # At 20 tokens/s the model sees the cancel within a few tokens of the close.
    assert 3 <= generated < 3 + 10


async def test_cancelling_the_task_that_reads_a_triton_stream_cancels_the_request(
    triton: InferenceServerClient, local_stack: LocalStack
) -> None:
    backend = TritonBackend(triton, "parley-scripted", {"ttft_ms": 60_000})
    generation = _generation()
    reader = asyncio.create_task(_collect(backend.stream(generation)))
    await asyncio.sleep(1)  # the request reaches the model
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader

    # Seen within seconds, not after the minute the first token was due.
    assert await _scripted_cancel(local_stack, generation.request_id) == 0


async def test_triton_failure_before_the_first_token_is_retryable(triton: InferenceServerClient) -> None:
    backend = TritonBackend(triton, "parley-scripted", {"fail_after_tokens": 0}, "triton/parley-scripted")

    with pytest.raises(BackendError) as raised:
        await _collect(backend.stream(_generation()))

    assert raised.value.retryable
    assert raised.value.message == "the model is unavailable"
    assert "UNAVAILABLE" in raised.value.detail
    assert "scripted failure after 0 tokens" in raised.value.detail


async def test_triton_refusing_the_request_itself_is_not_retryable(triton: InferenceServerClient) -> None:
    backend = TritonBackend(triton, "parley-scripted")
    oversized = _generation(*_said("word " * 2000), max_tokens=100)

    with pytest.raises(BackendError) as raised:
        await _collect(backend.stream(oversized))

    assert not raised.value.retryable
    assert "INVALID_ARGUMENT" in raised.value.detail
    assert "exceeds the context window" in raised.value.detail
    assert "context window" not in raised.value.message  # the model's own words stay in the log


@pytest.mark.parametrize("where", ["unknown-model", "closed-port"])
async def test_a_triton_that_cannot_serve_the_model_is_a_retryable_error_and_probes_not_ready(
    triton: InferenceServerClient, where: str
) -> None:
    client = triton if where == "unknown-model" else InferenceServerClient(f"127.0.0.1:{_closed_port()}")
    try:
        model = "no-such-model" if where == "unknown-model" else "parley-scripted"
        backend = TritonBackend(client, model)

        with pytest.raises(BackendError) as raised:
            await _collect(backend.stream(_generation()))
        health = await backend.probe()
    finally:
        if client is not triton:
            await client.close()

    assert raised.value.retryable
    assert raised.value.message == "the model is unavailable"
    assert "127.0.0.1" not in raised.value.message
    assert not health.ready


async def test_triton_probe_says_ready_for_a_loaded_model(triton: InferenceServerClient) -> None:
    health = await TritonBackend(triton, "parley-scripted").probe()

    assert health.ready
    assert health.detail == ""


# The OpenAI-compatible backend ------------------------------------------------------------


async def test_openai_backend_answers_the_question(http: aiohttp.ClientSession, llama_base_url: str) -> None:
    backend = OpenAIBackend(http, llama_base_url, None, "smollm2", {"temperature": 0}, "openai/llama/smollm2")
    pieces: list[Piece] = []
    finish: Finish | None = None
    async for event in backend.stream(_generation(max_tokens=48)):
        if isinstance(event, Piece):
            pieces.append(event)
        else:
            finish = event

    assert "Paris" in "".join(piece.text for piece in pieces)
    assert len(pieces) > 1  # streamed
    # llama-cpp-python 0.3.36 ignores stream_options and streams no usage: the completion
    # is counted as the chunks received and the prompt is unknown (0).
    assert finish == Finish(reason="stop", prompt_tokens=0, completion_tokens=len(pieces))


async def test_openai_finish_says_length_when_max_tokens_cut_the_answer(
    http: aiohttp.ClientSession, llama_base_url: str
) -> None:
    backend = OpenAIBackend(http, llama_base_url, None, "smollm2", {"temperature": 0})

    _, finish = await _collect(
        backend.stream(_generation(*_said("Write a long story about the sea."), max_tokens=4))
    )

    assert finish is not None
    assert (finish.reason, finish.completion_tokens) == ("length", 4)


async def test_closing_an_openai_stream_disconnects_and_the_server_stops(
    http: aiohttp.ClientSession, llama_base_url: str, local_stack: LocalStack
) -> None:
    log = local_stack.config.log_path("llama")
    seen = log.read_text(errors="replace").count("Disconnected from client")
    backend = OpenAIBackend(http, llama_base_url, None, "smollm2", {"temperature": 0.7})
    story = _generation(
        *_said("Write a very long story about a lighthouse keeper and the sea."), max_tokens=500
    )
    events = backend.stream(story)
    for _ in range(3):
        assert isinstance(await anext(events), Piece)
    await events.aclose()

    deadline = time.monotonic() + 10
    while log.read_text(errors="replace").count("Disconnected from client") == seen:
        assert time.monotonic() < deadline, "the server never noticed the client leave"
        await asyncio.sleep(0.05)
    # The server runs one generation at a time: a short answer now means the story stopped.
    _, finish = await _collect(backend.stream(_generation(max_tokens=4)))
    assert finish is not None


async def test_openai_errors_are_retryable_except_a_request_the_server_rejects(
    http: aiohttp.ClientSession, llama_base_url: str
) -> None:
    wrong_path = OpenAIBackend(http, llama_base_url.removesuffix("/v1") + "/nowhere", None, "smollm2")
    closed = OpenAIBackend(http, f"http://127.0.0.1:{_closed_port()}/v1", None, "smollm2")

    with pytest.raises(BackendError) as rejected:
        await _collect(wrong_path.stream(_generation()))
    with pytest.raises(BackendError) as unreachable:
        await _collect(closed.stream(_generation()))

    assert not rejected.value.retryable
    assert "HTTP 404" in rejected.value.detail
    assert unreachable.value.retryable
    assert "ClientConnectorError" in unreachable.value.detail
    assert "127.0.0.1" not in unreachable.value.message


async def test_openai_probe_lists_the_model(http: aiohttp.ClientSession, llama_base_url: str) -> None:
    assert (await OpenAIBackend(http, llama_base_url, None, "smollm2").probe()).ready
    unlisted = await OpenAIBackend(http, llama_base_url, None, "gpt-5").probe()
    assert not unlisted.ready
    assert "'gpt-5' is not listed" in unlisted.detail
    closed = await OpenAIBackend(http, f"http://127.0.0.1:{_closed_port()}/v1", None, "smollm2").probe()
    assert not closed.ready


# Routing: failover, timeouts, breakers ----------------------------------------------------


async def _answer(routed: RoutedStream) -> tuple[str, Finish | None]:
    pieces = [routed.first.text] if isinstance(routed.first, Piece) else []
    finish = routed.first if isinstance(routed.first, Finish) else None
    async for event in routed:
        if isinstance(event, Piece):
            pieces.append(event.text)
        else:
            finish = event
    return "".join(pieces), finish


async def test_the_first_backend_answers_when_it_can(make_routes: RoutesFactory) -> None:
    routes = make_routes(_model("chat", [_triton("parley-scripted"), _triton("parley-tiny")]))
    model = routes.catalog.model("chat")
    generation = _generation()

    routed = await routes.open(model, generation)
    text, finish = await _answer(routed)

    assert (routed.model.name, routed.backend, routed.request_id) == (
        "chat",
        "triton/parley-scripted",
        generation.request_id,
    )
    assert text == ECHO
    assert finish is not None
    assert finish.completion_tokens == len(ECHO.split())


@pytest.mark.parametrize(
    "failing",
    [
        pytest.param(_triton("parley-scripted", fail_after_tokens=0), id="scripted-failure"),
        pytest.param(_triton("no-such-model"), id="model-not-loaded"),
        pytest.param(_openai("closed"), id="connection-refused"),
    ],
)
async def test_a_backend_that_fails_before_its_first_token_fails_over_to_the_next(
    make_routes: RoutesFactory, failing: dict[str, Any]
) -> None:
    registry = CollectorRegistry()
    routes = make_routes(_model("chat", [failing, _triton("parley-tiny")]), registry=registry)
    generation = _generation(max_tokens=6)

    routed = await routes.open(routes.catalog.model("chat"), generation)
    _, finish = await _answer(routed)

    assert routed.backend == "triton/parley-tiny"
    assert routed.request_id == f"{generation.request_id}-2"
    assert finish is not None
    assert finish.completion_tokens == 6
    first_key = routes.backends(routes.catalog.model("chat"))[0].key
    assert _tries(registry, first_key, "failed") == 1
    assert registry.get_sample_value("parley_router_backend_failovers_total", {"backend": first_key}) == 1
    assert _tries(registry, "triton/parley-tiny", "answered") == 1


async def test_a_model_whose_backends_all_fail_falls_back_to_its_fallbacks(
    make_routes: RoutesFactory,
) -> None:
    routes = make_routes(
        _model("big", [_openai("closed")], fallbacks=["small"]),
        _model("small", [_triton("parley-scripted", tokens_per_second=0)], max_output_tokens=3),
    )

    routed = await routes.open(routes.catalog.model("big"), _generation(max_tokens=100))
    text, finish = await _answer(routed)

    assert (routed.model.name, routed.backend) == ("small", "triton/parley-scripted")
    # max_tokens is clipped to what the fallback model may answer.
    assert text == "(system: You are"
    assert finish is not None
    assert (finish.reason, finish.completion_tokens) == ("length", 3)


async def test_a_backend_without_a_first_token_in_time_is_cancelled_and_failed_over(
    make_routes: RoutesFactory, local_stack: LocalStack
) -> None:
    routes = make_routes(
        _model("chat", [_triton("parley-scripted", ttft_ms=60_000), _triton("parley-tiny")]),
        first_token_timeout_s=0.5,
    )
    generation = _generation(max_tokens=4)
    started = time.monotonic()

    routed = await routes.open(routes.catalog.model("chat"), generation)
    await _answer(routed)

    assert routed.backend == "triton/parley-tiny"
    assert time.monotonic() - started < 30  # not the minute the first token was due
    # The slow try was cancelled at the model, not left running.
    assert await _scripted_cancel(local_stack, generation.request_id) == 0


async def test_the_breaker_opens_after_failures_and_closes_when_the_backend_works_again(
    make_routes: RoutesFactory, triton: InferenceServerClient
) -> None:
    clock = FakeClock()
    registry = CollectorRegistry()
    routes = make_routes(
        _model("chat", [_triton("parley-scripted"), _triton("parley-tiny")]),
        registry=registry,
        clock=clock,
        breaker=BreakerSettings(failure_threshold=2, open_s=30.0),
    )
    model = routes.catalog.model("chat")
    failing = _said("hello [scripted fail_after_tokens=0]")
    breaker = routes.breakers["triton/parley-scripted"]

    for _ in range(2):
        routed = await routes.open(model, _generation(*failing, max_tokens=4))
        await _answer(routed)
        assert routed.backend == "triton/parley-tiny"
    assert _state(breaker) == "open"

    # While open, parley-scripted gets no request at all: Triton counts none, and the
    # next backend gets the turn's first try.
    before = await _scripted_requests(triton)
    healthy = _generation(*_said("hello"), max_tokens=4)
    routed = await routes.open(model, healthy)
    await _answer(routed)
    assert (routed.backend, routed.request_id) == ("triton/parley-tiny", healthy.request_id)
    assert await _scripted_requests(triton) == before
    assert _tries(registry, "triton/parley-scripted", "skipped") == 1
    assert _breaker_level(registry, "triton/parley-scripted") == 2

    # After open_s, one trial goes through; the backend works again, so the breaker closes.
    clock.now += 30
    routed = await routes.open(model, _generation(*_said("hello"), max_tokens=4))
    text, _ = await _answer(routed)
    assert routed.backend == "triton/parley-scripted"
    assert text == "you said: hello"
    assert _state(breaker) == "closed"
    assert _breaker_level(registry, "triton/parley-scripted") == 0


async def test_a_failed_half_open_trial_opens_the_breaker_again(make_routes: RoutesFactory) -> None:
    clock = FakeClock()
    routes = make_routes(
        _model("chat", [_triton("parley-scripted"), _triton("parley-tiny")]),
        clock=clock,
        breaker=BreakerSettings(failure_threshold=1, open_s=10.0),
    )
    model = routes.catalog.model("chat")
    failing = _said("hello [scripted fail_after_tokens=0]")
    breaker = routes.breakers["triton/parley-scripted"]
    await _answer(await routes.open(model, _generation(*failing, max_tokens=2)))
    assert _state(breaker) == "open"

    clock.now += 10
    routed = await routes.open(model, _generation(*failing, max_tokens=2))
    await _answer(routed)

    assert routed.request_id.endswith("-2")  # the trial was tried, and failed
    assert _state(breaker) == "open"


async def test_when_every_backend_fails_the_turn_gets_no_backend_available(
    make_routes: RoutesFactory,
) -> None:
    routes = make_routes(
        _model(
            "chat", [_triton("parley-scripted", fail_after_tokens=0), _openai("closed")], fallbacks=["other"]
        ),
        _model("other", [_triton("no-such-model")]),
    )

    with pytest.raises(NoBackendAvailable) as raised:
        await routes.open(routes.catalog.model("chat"), _generation())

    assert raised.value.message == "no backend of models/chat could answer; retry shortly"
    assert raised.value.retryable
    for key in ("triton/parley-scripted", "openai/closed/smollm2", "triton/no-such-model"):
        assert key in raised.value.detail


async def test_a_request_every_backend_would_refuse_does_not_fail_over(make_routes: RoutesFactory) -> None:
    registry = CollectorRegistry()
    routes = make_routes(
        _model("chat", [_triton("parley-scripted"), _triton("parley-tiny")]), registry=registry
    )

    with pytest.raises(BackendError) as raised:
        await routes.open(routes.catalog.model("chat"), _generation(*_said("word " * 2000), max_tokens=100))

    assert not isinstance(raised.value, NoBackendAvailable)
    assert not raised.value.retryable
    assert _tries(registry, "triton/parley-scripted", "refused") == 1
    assert _tries(registry, "triton/parley-tiny", "answered") == 0
    assert routes.breakers["triton/parley-scripted"].state == "closed"


async def test_a_failure_after_the_first_token_ends_the_stream_without_failover(
    make_routes: RoutesFactory,
) -> None:
    registry = CollectorRegistry()
    routes = make_routes(
        _model("chat", [_triton("parley-scripted", fail_after_tokens=3), _triton("parley-tiny")]),
        registry=registry,
    )
    routed = await routes.open(routes.catalog.model("chat"), _generation())
    pieces = [routed.first]

    async def read_on() -> None:
        async for event in routed:
            pieces.append(event)

    with pytest.raises(BackendError) as raised:
        await read_on()

    assert routed.backend == "triton/parley-scripted"
    assert [piece.text for piece in pieces if isinstance(piece, Piece)] == ["(system:", " You", " are"]
    assert raised.value.retryable
    assert "scripted failure after 3 tokens" in raised.value.detail
    assert [event async for event in routed] == []  # nothing after the error
    assert _tries(registry, "triton/parley-tiny", "answered") == 0
    assert (
        registry.get_sample_value(
            "parley_router_backend_broken_streams_total", {"backend": "triton/parley-scripted"}
        )
        == 1
    )
    # A broken stream is not a failure before the first token: the breaker does not count it.
    assert routes.breakers["triton/parley-scripted"].consecutive_failures == 0


async def test_a_stream_that_goes_silent_after_its_first_token_times_out_and_is_cancelled(
    make_routes: RoutesFactory, local_stack: LocalStack
) -> None:
    routes = make_routes(
        _model("chat", [_triton("parley-scripted", ttft_ms=0, tokens_per_second=0.5)]),
        inter_token_timeout_s=0.5,
    )
    routed = await routes.open(routes.catalog.model("chat"), _generation())

    with pytest.raises(BackendError) as raised:
        await _answer(routed)

    assert raised.value.message == "the model stopped answering"
    assert await _scripted_cancel(local_stack, routed.request_id) == 1


async def test_closing_a_routed_stream_cancels_the_request_at_the_model(
    make_routes: RoutesFactory, local_stack: LocalStack
) -> None:
    routes = make_routes(_model("chat", [_triton("parley-scripted", tokens_per_second=20, reply_tokens=500)]))
    routed = await routes.open(routes.catalog.model("chat"), _generation(max_tokens=1000))
    assert isinstance(await anext(routed), Piece)

    await routed.aclose()

    assert 2 <= await _scripted_cancel(local_stack, routed.request_id) < 2 + 10


async def test_an_openai_backend_answers_through_the_routes(make_routes: RoutesFactory) -> None:
    routes = make_routes(_model("chat", [_openai("closed"), _openai("llama", temperature=0)]))

    routed = await routes.open(routes.catalog.model("chat"), _generation(max_tokens=48))
    text, finish = await _answer(routed)

    assert routed.backend == "openai/llama/smollm2"
    assert "Paris" in text
    assert finish is not None
    assert finish.reason == "stop"


def test_a_catalog_endpoint_the_settings_do_not_define_is_refused_at_start(triton_target: str) -> None:
    catalog = _catalog(_model("chat", [_openai("elsewhere")]))

    with pytest.raises(ValueError, match="names the endpoint 'elsewhere'"):
        ModelRoutes(catalog, RouterSettings(triton_target=triton_target))


# Health -----------------------------------------------------------------------------------


async def _settled(routes: ModelRoutes, model: CatalogModel) -> str:
    deadline = time.monotonic() + 20
    while (health := await routes.health(model)) == "unknown":
        assert time.monotonic() < deadline, "no probe finished"
        await asyncio.sleep(0.05)
    return health


async def test_health_combines_probes_breakers_and_fallbacks(make_routes: RoutesFactory) -> None:
    routes = make_routes(
        _model("first-ready", [_triton("parley-scripted"), _openai("closed")]),
        _model("second-ready", [_triton("no-such-model"), _openai("llama")]),
        _model("fallback-ready", [_openai("closed")], fallbacks=["first-ready"]),
        _model("none-ready", [_triton("no-such-model"), _openai("closed")]),
        health_interval_s=0.2,
    )
    catalog = routes.catalog
    assert await routes.health(catalog.model("first-ready")) == "unknown"  # nothing probed yet

    await routes.start()

    assert await _settled(routes, catalog.model("first-ready")) == "ready"
    assert await _settled(routes, catalog.model("second-ready")) == "degraded"
    assert await _settled(routes, catalog.model("fallback-ready")) == "degraded"
    assert await _settled(routes, catalog.model("none-ready")) == "unavailable"


async def test_an_open_breaker_makes_a_ready_backend_count_as_down(make_routes: RoutesFactory) -> None:
    routes = make_routes(
        _model("chat", [_triton("parley-scripted"), _triton("parley-tiny")]),
        breaker=BreakerSettings(failure_threshold=1, open_s=600.0),
    )
    model = routes.catalog.model("chat")
    await routes.refresh_health()
    assert await routes.health(model) == "ready"

    routes.breakers["triton/parley-scripted"].record_failure()
    assert await routes.health(model) == "degraded"
    routes.breakers["triton/parley-tiny"].record_failure()
    assert await routes.health(model) == "unavailable"

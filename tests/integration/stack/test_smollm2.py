"""SmolLM2-135M-Instruct served two ways: Triton's smollm2 model and llama-cpp-python's OpenAI server.

Both run the same GGUF on the same llama.cpp build, and both answer a real question.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
from tritonclient.grpc import InferInput
from tritonclient.grpc.aio import InferenceServerClient

from parley_stack.servers.llama import CONTEXT_WINDOW, LLAMA_CPP_VERSION, MODEL_ALIAS
from parley_stack.servers.triton import MODEL_REPOSITORY
from parley_stack.testing import LocalStack

pytestmark = pytest.mark.integration

MODEL = "smollm2"
# With this system message the likeliest answer (temperature 0) is "The capital of France is
# Paris."; with SmolLM2's default one, a 135M model wanders off into French words.
QUESTION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
QUESTION_CHATML = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    "<|im_start|>assistant\n"
)
# A request that would run to max_tokens: it is cancelled long before.
STORY = [{"role": "user", "content": "Write a very long story about a lighthouse keeper and the sea."}]


@pytest.fixture(scope="module")
def llama_url(local_stack: LocalStack) -> str:
    local_stack.ensure("llama")
    host, port = local_stack.endpoint("llama", "http")
    return f"http://{host}:{port}"


@pytest.fixture
async def llama(llama_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=llama_url, timeout=60) as client:
        yield client


def _text_input(name: str, value: str) -> InferInput:
    tensor = InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([value.encode()], dtype=np.object_))
    return tensor


def _request(
    *,
    messages: list[dict[str, str]] | None = None,
    prompt: str | None = None,
    max_tokens: int = 48,
    temperature: float | None = 0.0,
    request_id: str = "",
) -> dict[str, object]:
    inputs = []
    if messages is not None:
        inputs.append(_text_input("messages", json.dumps(messages)))
    if prompt is not None:
        inputs.append(_text_input("prompt", prompt))
    max_tokens_input = InferInput("max_tokens", [1], "INT32")
    max_tokens_input.set_data_from_numpy(np.array([max_tokens], dtype=np.int32))
    inputs.append(max_tokens_input)
    if temperature is not None:
        temperature_input = InferInput("temperature", [1], "FP32")
        temperature_input.set_data_from_numpy(np.array([temperature], dtype=np.float32))
        inputs.append(temperature_input)
    return {"model_name": MODEL, "inputs": inputs, "request_id": request_id}


async def _one(request: dict[str, object]) -> AsyncIterator[dict[str, object]]:
    yield request


@dataclass
class _Stream:
    pieces: list[str] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    finish_reason: str = ""
    first_token_s: float = 0.0

    @property
    def text(self) -> str:
        return "".join(self.pieces)


async def _generate(client: InferenceServerClient, request: dict[str, object]) -> _Stream:
    """Stream one request until the response that carries the usage."""
    stream = _Stream()
    started = time.monotonic()
    async for result, error in client.stream_infer(_one(request)):
        assert error is None, error
        completion_tokens = result.as_numpy("completion_tokens")
        if completion_tokens is not None:
            stream.usage = {
                "prompt_tokens": int(result.as_numpy("prompt_tokens")[0]),
                "completion_tokens": int(completion_tokens[0]),
            }
            stream.finish_reason = result.as_numpy("finish_reason")[0].decode()
            break
        if not stream.pieces:
            stream.first_token_s = time.monotonic() - started
        stream.pieces.append(result.as_numpy("text")[0].decode())
        stream.indexes.append(int(result.as_numpy("index")[0]))
    return stream


async def _first_error(client: InferenceServerClient, request: dict[str, object]) -> str:
    responses = client.stream_infer(_one(request))
    result, error = await anext(aiter(responses))
    responses.cancel()
    assert result is None
    assert error is not None
    return str(error)


async def _log_line(path: Any, pattern: re.Pattern[str], timeout_s: float = 10) -> re.Match[str] | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = pattern.search(path.read_text(errors="replace"))
        if found is not None:
            return found
        await asyncio.sleep(0.05)
    return None


def test_both_servers_run_the_pinned_llama_cpp_build() -> None:
    requirements = (MODEL_REPOSITORY / "requirements.txt").read_text()
    assert f"\nllama-cpp-python=={LLAMA_CPP_VERSION}\n" in requirements


async def test_triton_streams_a_correct_answer_with_the_model_s_token_counts(
    triton: InferenceServerClient,
) -> None:
    stream = await _generate(triton, _request(messages=QUESTION))

    assert "Paris" in stream.text
    assert stream.indexes == list(range(len(stream.pieces)))
    assert len(stream.pieces) > 1  # streamed, not sent whole
    assert stream.finish_reason == "stop"
    # The question and the system message with the template's markers around them.
    assert stream.usage["prompt_tokens"] > 20
    # One response per token, except where a character spans tokens.
    assert stream.usage["completion_tokens"] >= len(stream.pieces)
    assert stream.usage["completion_tokens"] < 48


async def test_triton_prompt_is_chatml_turns_or_one_user_message(triton: InferenceServerClient) -> None:
    as_messages = await _generate(triton, _request(messages=QUESTION))
    as_chatml = await _generate(triton, _request(prompt=QUESTION_CHATML))
    question = QUESTION[1]["content"]
    as_text = await _generate(triton, _request(prompt=question, max_tokens=8))
    as_user_message = await _generate(triton, _request(messages=[QUESTION[1]], max_tokens=8))

    assert (as_chatml.text, as_chatml.usage) == (as_messages.text, as_messages.usage)
    assert (as_text.text, as_text.usage) == (as_user_message.text, as_user_message.usage)
    # Without a system message the template adds SmolLM2's default one, which is longer.
    assert as_text.usage["prompt_tokens"] > as_messages.usage["prompt_tokens"]


async def test_triton_stops_at_max_tokens(triton: InferenceServerClient) -> None:
    stream = await _generate(triton, _request(messages=STORY, max_tokens=5))

    assert stream.finish_reason == "length"
    assert stream.usage["completion_tokens"] == 5


async def test_triton_streams_take_turns_instead_of_queueing(triton: InferenceServerClient) -> None:
    long_answer = asyncio.create_task(_generate(triton, _request(messages=STORY, max_tokens=200)))
    await asyncio.sleep(0.5)  # the story is being written
    short_answer = await _generate(triton, _request(messages=QUESTION))

    assert "Paris" in short_answer.text
    assert not long_answer.done(), "the question waited until the story was finished"
    story = await long_answer
    assert story.usage["completion_tokens"] == 200


async def test_triton_model_sees_a_cancel_and_the_stream_ends(
    triton: InferenceServerClient, local_stack: LocalStack
) -> None:
    request_id = f"cancel-{uuid.uuid4()}"
    max_tokens = 500
    responses = triton.stream_infer(
        _one(_request(messages=STORY, max_tokens=max_tokens, temperature=0.7, request_id=request_id))
    )
    received = 0
    async for result, error in responses:
        assert error is None, error
        assert result.as_numpy("completion_tokens") is None, "the stream ended before the cancel"
        received += 1
        if received == 3:
            responses.cancel()
            break
    # Nothing more arrives on the cancelled stream.
    with pytest.raises((StopAsyncIteration, asyncio.CancelledError)):
        await anext(aiter(responses))

    pattern = re.compile(rf"smollm2: request '{re.escape(request_id)}' cancelled after (\d+) tokens")
    found = await _log_line(local_stack.config.log_path("triton"), pattern)
    assert found is not None, f"no cancel line for {request_id}"
    generated = int(found.group(1))
    assert received <= generated < received + 20 < max_tokens


async def test_triton_refuses_what_it_cannot_serve(triton: InferenceServerClient) -> None:
    both = _request(messages=QUESTION, prompt="Hello")
    assert "send exactly one of messages and prompt" in await _first_error(triton, both)

    bad_role = _request(messages=[{"role": "tool", "content": "Hi"}])
    assert "messages[0] must be" in await _first_error(triton, bad_role)

    too_long = _request(messages=[{"role": "user", "content": "word " * CONTEXT_WINDOW}], max_tokens=16)
    assert "exceeds the context window of 2048 tokens" in await _first_error(triton, too_long)


async def test_triton_takes_the_temperature_from_a_request_parameter(triton: InferenceServerClient) -> None:
    request = {**_request(messages=QUESTION, temperature=None), "parameters": {"temperature": 5}}

    assert "temperature must be between 0 and 2, got 5.0" in await _first_error(triton, request)


async def test_triton_model_config_names_its_context_window(triton: InferenceServerClient) -> None:
    config = await triton.get_model_config(MODEL, as_json=True)
    parameters = config["config"]["parameters"]

    assert int(parameters["context_window"]["string_value"]) == CONTEXT_WINDOW
    assert config["config"]["model_transaction_policy"]["decoupled"] is True


async def _chat_stream(client: httpx.AsyncClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The chunks of one streamed chat completion (server-sent events up to [DONE])."""
    chunks: list[dict[str, Any]] = []
    async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                return chunks
            chunks.append(json.loads(data))
    raise AssertionError("the stream ended without [DONE]")


async def test_openai_server_lists_the_model(llama: httpx.AsyncClient) -> None:
    response = await llama.get("/v1/models")

    assert response.status_code == 200
    assert [model["id"] for model in response.json()["data"]] == [MODEL_ALIAS]


async def test_openai_server_streams_a_correct_answer(llama: httpx.AsyncClient) -> None:
    body = {"model": MODEL_ALIAS, "messages": QUESTION, "max_tokens": 48, "temperature": 0}
    chunks = await _chat_stream(llama, body)

    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    assert "Paris" in text
    assert sum(1 for chunk in chunks if chunk["choices"][0]["delta"].get("content")) > 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_openai_server_reports_usage(llama: httpx.AsyncClient) -> None:
    # llama-cpp-python 0.3.36 has no stream_options: only the unary call reports usage.
    body = {"model": MODEL_ALIAS, "messages": QUESTION, "max_tokens": 48, "temperature": 0}
    response = await llama.post("/v1/chat/completions", json=body)

    assert response.status_code == 200
    answer = response.json()
    assert "Paris" in answer["choices"][0]["message"]["content"]
    usage = answer["usage"]
    assert usage["prompt_tokens"] > 20
    assert 0 < usage["completion_tokens"] < 48
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_both_backends_give_the_same_greedy_answer_and_counts(
    triton: InferenceServerClient, llama: httpx.AsyncClient
) -> None:
    body = {"model": MODEL_ALIAS, "messages": QUESTION, "max_tokens": 48, "temperature": 0}
    answer = (await llama.post("/v1/chat/completions", json=body)).json()
    stream = await _generate(triton, _request(messages=QUESTION))

    assert stream.text == answer["choices"][0]["message"]["content"]
    assert stream.usage == {
        "prompt_tokens": answer["usage"]["prompt_tokens"],
        "completion_tokens": answer["usage"]["completion_tokens"],
    }


async def test_openai_server_stops_generating_when_the_client_goes_away(
    llama: httpx.AsyncClient, local_stack: LocalStack
) -> None:
    log = local_stack.config.log_path("llama")
    seen = log.read_text(errors="replace").count("Disconnected from client")
    body = {"model": MODEL_ALIAS, "messages": STORY, "max_tokens": 500, "temperature": 0.7, "stream": True}
    async with llama.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = 0
        async for line in response.aiter_lines():
            lines += line.startswith("data: ")
            if lines == 3:
                break

    deadline = time.monotonic() + 10
    while log.read_text(errors="replace").count("Disconnected from client") == seen:
        assert time.monotonic() < deadline, "the server never noticed the client leave"
        await asyncio.sleep(0.05)
    # The model is free again: a short answer does not wait behind the story (440 to 500
    # tokens, 6 to 7 s here).
    started = time.monotonic()
    short = {"model": MODEL_ALIAS, "messages": QUESTION, "max_tokens": 8, "temperature": 0}
    assert (await llama.post("/v1/chat/completions", json=short)).status_code == 200
    assert time.monotonic() - started < 2

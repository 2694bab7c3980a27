"""parley-scripted on the stack's Triton: it echoes its context and follows its script.

Timing is asserted only as lower bounds the model guarantees (it never sends a token before
it is due) and as orderings with wide margins, never as a measured duration.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pytest
from tritonclient.grpc import InferInput
from tritonclient.grpc.aio import InferenceServerClient

from parley_stack.testing import LocalStack

# A stream the model never ends would otherwise hang the run.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MODEL = "parley-scripted"


@pytest.fixture
def client(triton: InferenceServerClient) -> InferenceServerClient:
    return triton


def chatml(*turns: tuple[str, str]) -> str:
    """A ChatML prompt of (role, text) turns, ending where the assistant's answer starts."""
    rendered = "".join(f"<|im_start|>{role}\n{text}<|im_end|>\n" for role, text in turns)
    return rendered + "<|im_start|>assistant\n"


def _text_input(name: str, text: str) -> InferInput:
    tensor = InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
    return tensor


def _request(
    prompt: str | None,
    *,
    messages: str | None = None,
    max_tokens: int | None = None,
    parameters: Mapping[str, int | float | str] | None = None,
    request_id: str = "",
) -> dict[str, object]:
    inputs = []
    if prompt is not None:
        inputs.append(_text_input("prompt", prompt))
    if messages is not None:
        inputs.append(_text_input("messages", messages))
    if max_tokens is not None:
        max_tokens_input = InferInput("max_tokens", [1], "INT32")
        max_tokens_input.set_data_from_numpy(np.array([max_tokens], dtype=np.int32))
        inputs.append(max_tokens_input)
    return {
        "model_name": MODEL,
        "inputs": inputs,
        "request_id": request_id,
        "parameters": dict(parameters) if parameters else None,
    }


async def _one_request(request: dict[str, object]) -> AsyncIterator[dict[str, object]]:
    yield request


@dataclass
class _Stream:
    sent: float = 0.0
    pieces: list[str] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    finish_reason: str = ""
    error: str = ""

    @property
    def text(self) -> str:
        return "".join(self.pieces)


async def _run(client: InferenceServerClient, request: dict[str, object]) -> _Stream:
    """Stream one request until its usage or its error."""
    stream = _Stream(sent=time.monotonic())
    async for result, error in client.stream_infer(_one_request(request)):
        if error is not None:
            stream.error = str(error)
            break
        completion_tokens = result.as_numpy("completion_tokens")
        if completion_tokens is not None:
            stream.usage = {
                "prompt_tokens": int(result.as_numpy("prompt_tokens")[0]),
                "completion_tokens": int(completion_tokens[0]),
            }
            stream.finish_reason = result.as_numpy("finish_reason")[0].decode()
            break
        stream.arrivals.append(time.monotonic())
        stream.pieces.append(result.as_numpy("text")[0].decode())
        stream.indexes.append(int(result.as_numpy("index")[0]))
    return stream


async def _cancel_line(local_stack: LocalStack, request_id: str) -> int:
    """How many tokens the model says it had sent when it saw request_id's cancel."""
    log = local_stack.config.log_path("triton")
    pattern = re.compile(rf"{MODEL}: request '{re.escape(request_id)}' cancelled after (\d+) tokens")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = pattern.search(log.read_text(errors="replace"))
        if found:
            return int(found.group(1))
        await asyncio.sleep(0.05)
    raise AssertionError(f"no cancel line for {request_id} in {log}")


async def test_it_echoes_the_user_turns_it_received_in_order(client: InferenceServerClient) -> None:
    prompt = chatml(
        ("system", "Be  brief."),
        ("user", "What is a lighthouse?"),
        ("assistant", "A tower with a light."),
        ("user", "Who keeps it?"),
        ("assistant", "A keeper."),
        ("user", "Thanks,\nbye"),
    )
    stream = await _run(client, _request(prompt))

    expected = "(system: Be brief.) you said: What is a lighthouse? | Who keeps it? | Thanks, bye"
    assert stream.text == expected
    assert stream.error == ""
    assert stream.indexes == list(range(len(expected.split())))
    assert stream.usage == {"prompt_tokens": len(prompt.split()), "completion_tokens": len(expected.split())}
    assert stream.finish_reason == "stop"


async def test_messages_are_the_same_conversation_as_its_chatml_prompt(client: InferenceServerClient) -> None:
    turns = [
        ("system", "Be brief."),
        ("user", "Hi there"),
        ("assistant", "you said: Hi there"),
        ("user", "Bye"),
    ]
    messages = json.dumps([{"role": role, "content": text} for role, text in turns])
    as_messages = await _run(client, _request(None, messages=messages))
    as_prompt = await _run(client, _request(chatml(*turns)))

    assert as_messages.text == "(system: Be brief.) you said: Hi there | Bye"
    assert as_messages.text == as_prompt.text
    assert as_messages.usage == as_prompt.usage


async def test_a_prompt_that_is_not_chatml_is_one_user_turn(client: InferenceServerClient) -> None:
    stream = await _run(client, _request("The lighthouse   keeper"))

    assert stream.text == "you said: The lighthouse keeper"
    assert stream.usage == {"prompt_tokens": 3, "completion_tokens": 5}


async def test_max_tokens_cuts_the_reply(client: InferenceServerClient) -> None:
    stream = await _run(client, _request("one two three", max_tokens=3, parameters={"reply_tokens": 40}))

    assert stream.text == "you said: one"
    assert stream.usage["completion_tokens"] == 3
    assert stream.finish_reason == "length"


async def test_reply_tokens_repeats_the_echo_to_that_length(client: InferenceServerClient) -> None:
    stream = await _run(client, _request("one two", parameters={"reply_tokens": 9}))

    assert stream.text == "you said: one two you said: one two you"
    assert stream.usage["completion_tokens"] == 9
    assert stream.finish_reason == "stop"


async def test_parameters_it_does_not_know_are_left_alone(client: InferenceServerClient) -> None:
    stream = await _run(client, _request("hello", parameters={"temperature": 0.7, "top_k": 5}))

    assert stream.text == "you said: hello"
    assert stream.error == ""


async def test_time_to_first_token_and_pace_follow_the_parameters(client: InferenceServerClient) -> None:
    slow, fast = await asyncio.gather(
        _run(
            client, _request("slow", parameters={"ttft_ms": 400, "tokens_per_second": 20, "reply_tokens": 6})
        ),
        _run(client, _request("fast", parameters={"ttft_ms": 0, "tokens_per_second": 0, "reply_tokens": 6})),
    )

    assert len(slow.arrivals) == len(fast.arrivals) == 6
    # The model never sends a token before it is due: arrival + 400 ms, then one per 50 ms.
    assert slow.arrivals[0] - slow.sent >= 0.4
    assert slow.arrivals[-1] - slow.sent >= 0.4 + 5 * 0.05
    # The fast stream, started at the same time, is over long before the slow one starts.
    assert fast.arrivals[-1] < slow.arrivals[0]
    assert slow.arrivals[-1] - slow.sent < 10  # sanity only


async def test_without_parameters_the_config_defaults_apply(client: InferenceServerClient) -> None:
    config = await client.get_model_config(MODEL, as_json=True)
    parameters = config["config"]["parameters"]
    ttft_s = int(parameters["default_ttft_ms"]["string_value"]) / 1000
    interval_s = 1 / float(parameters["default_tokens_per_second"]["string_value"])
    stream = await _run(client, _request("pace", parameters={"reply_tokens": 10}))

    assert ttft_s > 0
    assert interval_s > 0
    assert stream.arrivals[0] - stream.sent >= ttft_s
    assert stream.arrivals[-1] - stream.sent >= ttft_s + 9 * interval_s


async def test_fail_after_zero_tokens_fails_before_the_first_token(client: InferenceServerClient) -> None:
    stream = await _run(client, _request("hello", parameters={"fail_after_tokens": 0}))

    assert stream.pieces == []
    assert stream.usage == {}
    assert stream.error == f"{MODEL}: scripted failure after 0 tokens"


async def test_fail_after_n_tokens_sends_n_tokens_then_an_error(client: InferenceServerClient) -> None:
    stream = await _run(client, _request("one two three four", parameters={"fail_after_tokens": 3}))

    assert stream.text == "you said: one"
    assert stream.indexes == [0, 1, 2]
    assert stream.usage == {}
    assert stream.error == f"{MODEL}: scripted failure after 3 tokens"


async def test_fail_after_the_whole_reply_withholds_the_usage(client: InferenceServerClient) -> None:
    stream = await _run(client, _request("hello", parameters={"fail_after_tokens": 3}))

    assert stream.text == "you said: hello"
    assert stream.usage == {}
    assert stream.error == f"{MODEL}: scripted failure after 3 tokens"


async def test_directives_in_the_last_user_turn_script_it(client: InferenceServerClient) -> None:
    prompt = chatml(
        ("user", "first [scripted fail_after_tokens=0]"),
        ("assistant", "you said: first"),
        ("user", "second [scripted reply_tokens=6 fail_after_tokens=5]"),
    )
    # The directive wins over the request's parameter of the same name.
    stream = await _run(client, _request(prompt, parameters={"reply_tokens": 20, "ttft_ms": 0}))

    # Directives are not echoed, and the earlier turn's directive does not apply.
    assert stream.text == "you said: first | second"
    assert stream.error == f"{MODEL}: scripted failure after 5 tokens"


async def test_cancel_mid_stream_reaches_the_model(
    client: InferenceServerClient, local_stack: LocalStack
) -> None:
    request_id = f"cancel-{uuid.uuid4()}"
    parameters = {"ttft_ms": 0, "tokens_per_second": 20, "reply_tokens": 500}
    responses = client.stream_infer(
        _one_request(_request("go on", max_tokens=1000, parameters=parameters, request_id=request_id))
    )
    received = 0
    async for result, error in responses:
        assert error is None, error
        assert result.as_numpy("completion_tokens") is None, "the stream ended before the cancel"
        received += 1
        if received == 3:
            responses.cancel()
            break

    generated = await _cancel_line(local_stack, request_id)
    # At 20 tokens/s, the model sees the cancel within a few tokens of the client's.
    assert received <= generated < received + 10


async def test_cancel_while_waiting_for_the_first_token_reaches_the_model(
    client: InferenceServerClient, local_stack: LocalStack
) -> None:
    request_id = f"cancel-early-{uuid.uuid4()}"
    responses = client.stream_infer(
        _one_request(_request("wait", parameters={"ttft_ms": 60_000}, request_id=request_id))
    )
    first = asyncio.ensure_future(anext(aiter(responses)))
    await asyncio.sleep(1)  # the request reaches the model
    assert not first.done()
    responses.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first

    # Seen within seconds, not after the minute the first token was due.
    assert await _cancel_line(local_stack, request_id) == 0


async def test_many_streams_run_side_by_side(client: InferenceServerClient) -> None:
    parameters = {"ttft_ms": 0, "tokens_per_second": 20, "reply_tokens": 20}
    streams = await asyncio.gather(
        *(_run(client, _request(f"stream {i}", parameters=parameters)) for i in range(50))
    )

    for i, stream in enumerate(streams):
        assert stream.text == " ".join(f"you said: stream {i}".split() * 5)  # 4 tokens, 5 times
        assert stream.usage["completion_tokens"] == 20
    # Every stream had its first token before any stream (each a second long) had its last.
    assert max(stream.arrivals[0] for stream in streams) < min(stream.arrivals[-1] for stream in streams)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        pytest.param(
            _request("hello", max_tokens=0),
            "max_tokens must be between 1 and 1024, got 0",
            id="max-tokens-zero",
        ),
        pytest.param(
            _request("hello", parameters={"ttft_ms": -5}),
            "parameter ttft_ms must be at least 0, got -5",
            id="negative-parameter",
        ),
        pytest.param(
            _request("hello", parameters={"reply_tokens": "many"}),
            "parameter reply_tokens must be a number, got 'many'",
            id="parameter-not-a-number",
        ),
        pytest.param(
            _request("hello [scripted speed=3]"),
            "unknown directive 'speed'; known: ttft_ms, tokens_per_second, fail_after_tokens, reply_tokens",
            id="unknown-directive",
        ),
        pytest.param(
            _request("hello", messages='[{"role": "user", "content": "hello"}]'),
            "send exactly one of messages and prompt",
            id="prompt-and-messages",
        ),
        pytest.param(
            _request(None),
            "send exactly one of messages and prompt",
            id="neither-prompt-nor-messages",
        ),
        pytest.param(
            _request(None, messages='[{"role": "robot", "content": "beep"}]'),
            "messages[0] must be {'role': 'system' | 'user' | 'assistant', 'content': string}",
            id="unknown-role",
        ),
        pytest.param(
            _request(None, messages="[]"),
            "the conversation is empty",
            id="no-messages",
        ),
        pytest.param(
            _request("word " * 2000, max_tokens=100),
            "prompt (2000 tokens) plus max_tokens (100) exceeds the context window of 2048 tokens",
            id="over-the-context-window",
        ),
    ],
)
async def test_a_request_it_cannot_follow_is_refused(
    client: InferenceServerClient, request_: dict[str, object], message: str
) -> None:
    stream = await _run(client, request_)

    assert stream.pieces == []
    assert stream.error == f"{MODEL}: {message}"

"""Triton from the local stack: parley-tiny streams, stops on cancel, and matches the catalog."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from tritonclient.grpc import InferInput
from tritonclient.grpc.aio import InferenceServerClient

from parley_core.catalog import TritonBackend, load_catalog
from parley_stack.servers.triton import MODEL_REPOSITORY
from parley_stack.testing import LocalStack

pytestmark = pytest.mark.integration

MODEL = "parley-tiny"


@pytest.fixture
def client(triton: InferenceServerClient) -> InferenceServerClient:
    return triton


def _request(prompt: str, max_tokens: int, request_id: str = "") -> dict[str, object]:
    prompt_input = InferInput("prompt", [1], "BYTES")
    prompt_input.set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
    max_tokens_input = InferInput("max_tokens", [1], "INT32")
    max_tokens_input.set_data_from_numpy(np.array([max_tokens], dtype=np.int32))
    return {"model_name": MODEL, "inputs": [prompt_input, max_tokens_input], "request_id": request_id}


@dataclass
class _Stream:
    pieces: list[str] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "".join(self.pieces)


async def _one_request(request: dict[str, object]) -> AsyncIterator[dict[str, object]]:
    yield request


async def _generate(client: InferenceServerClient, prompt: str, max_tokens: int) -> _Stream:
    """Stream one request until the response that carries the usage."""
    stream = _Stream()
    responses = client.stream_infer(_one_request(_request(prompt, max_tokens)))
    async for result, error in responses:
        assert error is None, error
        completion_tokens = result.as_numpy("completion_tokens")
        if completion_tokens is not None:
            prompt_tokens = result.as_numpy("prompt_tokens")
            stream.usage = {
                "prompt_tokens": int(prompt_tokens[0]),
                "completion_tokens": int(completion_tokens[0]),
            }
            break
        stream.arrivals.append(time.monotonic())
        stream.pieces.append(result.as_numpy("text")[0].decode())
        stream.indexes.append(int(result.as_numpy("index")[0]))
    return stream


async def _token_delay_s(client: InferenceServerClient) -> float:
    config = await client.get_model_config(MODEL, as_json=True)
    return int(config["config"]["parameters"]["token_delay_ms"]["string_value"]) / 1000


async def test_tokens_stream_one_by_one_and_usage_counts_them(client: InferenceServerClient) -> None:
    delay_s = await _token_delay_s(client)
    stream = await _generate(client, "The lighthouse keeper", max_tokens=12)

    assert stream.indexes == list(range(12))
    assert stream.usage == {"prompt_tokens": 3, "completion_tokens": 12}
    # One response per token as it is made, not all at the end.
    assert stream.arrivals[-1] - stream.arrivals[0] >= 11 * delay_s * 0.8
    assert all(piece.strip() for piece in stream.pieces)


async def test_same_prompt_same_text_other_prompt_other_text(client: InferenceServerClient) -> None:
    first = await _generate(client, "Tell me about the harbor", max_tokens=20)
    again = await _generate(client, "Tell me about the harbor", max_tokens=20)
    other = await _generate(client, "Who keeps the light?", max_tokens=20)

    assert first.text == again.text
    assert other.text != first.text
    assert len(set(first.text.split())) >= 8  # a generated text, not a repeated word


async def test_cancel_mid_stream_stops_the_model(
    client: InferenceServerClient, local_stack: LocalStack
) -> None:
    request_id = f"cancel-{uuid.uuid4()}"
    max_tokens = 500
    responses = client.stream_infer(_one_request(_request("The stranger", max_tokens, request_id)))
    received = 0
    async for result, error in responses:
        assert error is None, error
        assert result.as_numpy("completion_tokens") is None, "the stream ended before the cancel"
        received += 1
        if received == 3:
            responses.cancel()
            break

    # The model writes one line when it sees the cancel; find ours in the server's log.
    log = local_stack.config.log_path("triton")
    pattern = re.compile(rf"request '{re.escape(request_id)}' cancelled after (\d+) tokens")
    deadline = time.monotonic() + 10
    found = None
    while found is None and time.monotonic() < deadline:
        found = pattern.search(log.read_text(errors="replace"))
        await asyncio.sleep(0.05)
    assert found is not None, f"no cancel line for {request_id} in {log}"
    generated = int(found.group(1))
    assert received <= generated < received + 10 < max_tokens


async def test_bad_max_tokens_is_rejected(client: InferenceServerClient) -> None:
    responses = client.stream_infer(_one_request(_request("The lighthouse keeper", 0)))
    result, error = await anext(aiter(responses))
    responses.cancel()

    assert result is None
    assert error is not None
    assert "max_tokens must be between 1 and 1024, got 0" in str(error)


async def test_catalog_models_are_served_as_described(client: InferenceServerClient) -> None:
    """Each Triton backend of the catalog is ready and has the window and output limit it says.

    The catalog's own rules (fallbacks, prices, tiers) are checked by tests/unit/test_catalog.py.
    """
    catalog = load_catalog(MODEL_REPOSITORY / "catalog.toml")
    served = [
        (model, backend)
        for model in catalog.models
        for backend in model.backends
        if isinstance(backend, TritonBackend)
    ]
    assert {backend.model for _, backend in served} >= {MODEL, "parley-scripted", "smollm2"}
    for model, backend in served:
        assert await client.is_model_ready(backend.model), backend.model
        config = await client.get_model_config(backend.model, as_json=True)
        parameters = config["config"]["parameters"]
        assert int(parameters["context_window"]["string_value"]) == model.context_window, backend.model
        assert int(parameters["max_output_tokens"]["string_value"]) == model.max_output_tokens, backend.model

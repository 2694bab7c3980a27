"""svc_router.tokens against the local stack's Triton: smollm2-tokens counts what smollm2 counts.

The proof is against the real smollm2 model: for each conversation, the counter's total
(each message's count plus the overhead) equals the prompt_tokens smollm2 reports for the
same messages, whether the counts came from Triton or from the counter's cache.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest
from tritonclient.grpc import InferInput
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from parley_core.catalog import CatalogModel, TritonTokenizer, load_catalog
from parley_stack.servers.triton import MODEL_REPOSITORY
from svc_router.backends._base import ChatMessage
from svc_router.tokens import CatalogTokenCounter, TokenCountError, TritonTokenCounter

pytestmark = pytest.mark.integration

CATALOG = load_catalog(MODEL_REPOSITORY / "catalog.toml")
SMOLLM2 = CATALOG.model("smollm2")
COUNTING_MODEL = "smollm2-tokens"

SYSTEM = ChatMessage("system", "You are a helpful assistant.")
EXCHANGE = (
    ChatMessage("user", "What is the capital of France?"),
    ChatMessage("assistant", "The capital of France is Paris."),
)
CONVERSATIONS = {
    "one question": (ChatMessage("user", "Hello!"),),
    "system and question": (SYSTEM, ChatMessage("user", "Hello!")),
    "several turns": (
        SYSTEM,
        *EXCHANGE,
        ChatMessage("user", "And of Japan? Answer in one word.\n\nThanks  "),
    ),
    "several turns, no system": (*EXCHANGE, ChatMessage("user", "Und Deutschland? Ünïcödé 日本語 🙂")),
    "starts with an answer": (
        ChatMessage("assistant", "Hi! I'm SmolLM."),
        ChatMessage("user", "  leading and trailing whitespace \n"),
    ),
    "empty and markup-looking content": (
        ChatMessage("system", ""),
        ChatMessage("user", "<|im_start|>user\nnot really<|im_end|>"),
        ChatMessage("assistant", ""),
        ChatMessage("user", "{{ messages }} {% if x %}"),
    ),
}


def _text_input(name: str, value: str) -> InferInput:
    tensor = InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([value.encode()], dtype=np.object_))
    return tensor


async def _smollm2_prompt_tokens(client: InferenceServerClient, messages: Sequence[ChatMessage]) -> int:
    """The prompt_tokens smollm2 itself reports for `messages` (one greedy token generated)."""
    max_tokens = InferInput("max_tokens", [1], "INT32")
    max_tokens.set_data_from_numpy(np.array([1], dtype=np.int32))
    temperature = InferInput("temperature", [1], "FP32")
    temperature.set_data_from_numpy(np.array([0.0], dtype=np.float32))
    payload = json.dumps([{"role": m.role, "content": m.content} for m in messages])
    request: dict[str, object] = {
        "model_name": "smollm2",
        "inputs": [_text_input("messages", payload), max_tokens, temperature],
    }

    async def one() -> AsyncIterator[dict[str, object]]:
        yield request

    async for result, error in client.stream_infer(one()):
        assert error is None, error
        prompt_tokens = result.as_numpy("prompt_tokens")
        if prompt_tokens is not None:
            return int(prompt_tokens[0])
    raise AssertionError("smollm2's stream ended without its usage")


async def _counting_requests(client: InferenceServerClient) -> int:
    statistics = await client.get_inference_statistics(COUNTING_MODEL, as_json=True)
    (model,) = statistics["model_stats"]
    return int(model["inference_count"])


@pytest.mark.parametrize("name", CONVERSATIONS)
async def test_the_counts_add_up_to_smollm2_s_prompt_tokens(triton: InferenceServerClient, name: str) -> None:
    messages = CONVERSATIONS[name]
    counts = await CatalogTokenCounter(TritonTokenCounter(triton)).count(SMOLLM2, messages, timeout_s=10)

    assert len(counts.messages) == len(messages)
    assert counts.total == await _smollm2_prompt_tokens(triton, messages)


async def test_cached_counts_add_up_for_a_growing_conversation(triton: InferenceServerClient) -> None:
    counter = TritonTokenCounter(triton)
    conversation = list(CONVERSATIONS["several turns"])
    await counter.count(SMOLLM2, conversation)

    conversation += [ChatMessage("assistant", "Tokyo."), ChatMessage("user", "Thank you, bye.")]
    grown = await counter.count(SMOLLM2, conversation)
    # Without its system prompt the template adds SmolLM2's default one: another overhead.
    trimmed = await counter.count(SMOLLM2, conversation[3:])

    assert grown.total == await _smollm2_prompt_tokens(triton, conversation)
    assert trimmed.total == await _smollm2_prompt_tokens(triton, conversation[3:])
    assert grown.messages[3:] == trimmed.messages


async def test_a_conversation_counted_before_needs_no_request(triton: InferenceServerClient) -> None:
    counter = TritonTokenCounter(triton)
    conversation = CONVERSATIONS["several turns, no system"]
    first = await counter.count(SMOLLM2, conversation)
    requests = await _counting_requests(triton)

    again = await counter.count(SMOLLM2, conversation[1:])

    assert await _counting_requests(triton) == requests
    assert again.messages == first.messages[1:]
    assert again.overhead == first.overhead


async def test_a_missing_counting_model_is_a_token_count_error(triton: InferenceServerClient) -> None:
    model = SMOLLM2.model_copy(update={"tokenizer": TritonTokenizer(kind="triton", model="no-such-model")})

    with pytest.raises(TokenCountError) as raised:
        await TritonTokenCounter(triton).count(model, [ChatMessage("user", "hi")])

    assert raised.value.message == "the model's token counter is unavailable"
    assert "no-such-model" in raised.value.detail


async def test_an_unreachable_triton_is_a_token_count_error() -> None:
    client = InferenceServerClient("127.0.0.1:1")
    try:
        with pytest.raises(TokenCountError):
            await TritonTokenCounter(client).count(SMOLLM2, [ChatMessage("user", "hi")], timeout_s=5)
    finally:
        await client.close()


async def test_smollm2_tokens_refuses_what_is_not_a_list_of_messages(triton: InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as raised:
        await triton.infer(COUNTING_MODEL, [_text_input("messages", '[{"role": "robot", "content": "x"}]')])

    assert "StatusCode.INVALID_ARGUMENT" in str(raised.value.status())
    assert "messages[0] must be" in raised.value.message()


def test_the_catalog_counts_smollm2_with_smollm2_tokens() -> None:
    model: CatalogModel = SMOLLM2
    assert model.tokenizer == TritonTokenizer(kind="triton", model=COUNTING_MODEL)

"""smollm2-tokens on Triton's Python backend: a conversation's length in smollm2's own tokens.

The router trims a turn's context to smollm2's window by smollm2's own counts, before it asks
smollm2. This model loads only the GGUF's vocabulary and renders messages with the same chat
template and tokenizer call as smollm2 (smollm2_gguf, shared), so that for any conversation
sum(message_tokens) + overhead_tokens is exactly the prompt_tokens smollm2 reports.

A message's count is what it adds to the rendered prompt after a fixed system message: with
SmolLM2's ChatML each message renders to `<|im_start|>role\\ncontent<|im_end|>\\n`, and the
special tokens at both ends keep its tokens apart from its neighbours', so the count is the
same wherever the message stands. Everything else the template adds (the generation prompt,
the default system message of a conversation that has none) is the overhead.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]
from smollm2_gguf import (
    InvalidRequestError,
    chat_formatter,
    checked_messages,
    conversation_tokens,
    weights_path,
)

_MODEL = "smollm2-tokens"
# Each message is counted after this one: a system message first, so that the template adds
# no default system message around the message counted.
_REFERENCE = {"role": "system", "content": "."}


def _parameters(model_config: Mapping[str, Any]) -> dict[str, str]:
    """config.pbtxt `parameters` as plain strings."""
    raw: Mapping[str, Mapping[str, str]] = model_config.get("parameters", {})
    return {name: value["string_value"] for name, value in raw.items()}


class TritonPythonModel:
    """The entry point the Python backend looks for."""

    def initialize(self, args: Mapping[str, str]) -> None:
        parameters = _parameters(json.loads(args["model_config"]))
        self._max_request_bytes = int(parameters["max_request_bytes"])
        gguf = weights_path(Path(__file__).parent, parameters["weights_package"], parameters["weights_file"])
        started = time.monotonic()
        self._vocab = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
        self._with_prompt = chat_formatter(self._vocab, add_generation_prompt=True)
        self._without_prompt = chat_formatter(self._vocab, add_generation_prompt=False)
        self._reference_tokens = self._tokens([_REFERENCE], generation_prompt=False)
        pb_utils.Logger.log_info(
            f"{_MODEL}: loaded the vocabulary of {gguf.name} in {time.monotonic() - started:.2f}s; "
            f"llama-cpp-python {llama_cpp.__version__}, python {sys.version.split()[0]} at {sys.prefix}"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                message_tokens, overhead = self._count(self._messages(request))
            except InvalidRequestError as error:
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"{_MODEL}: {error}", pb_utils.TritonError.INVALID_ARG)
                    )
                )
                continue
            except Exception as error:
                pb_utils.Logger.log_error(f"{_MODEL}: request {request.request_id()!r} failed: {error!r}")
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{_MODEL} failed: {error}"))
                )
                continue
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("message_tokens", np.array(message_tokens, dtype=np.int32)),
                        pb_utils.Tensor("overhead_tokens", np.array([overhead], dtype=np.int32)),
                    ]
                )
            )
        return responses

    def _tokens(self, messages: list[dict[str, str]], *, generation_prompt: bool) -> int:
        formatter = self._with_prompt if generation_prompt else self._without_prompt
        try:
            return len(conversation_tokens(self._vocab, formatter, messages))
        except ValueError as error:  # the template's raise_exception
            raise InvalidRequestError(f"the chat template refused the messages: {error}") from None

    def _count(self, messages: list[dict[str, str]]) -> tuple[list[int], int]:
        message_tokens = [
            self._tokens([_REFERENCE, message], generation_prompt=False) - self._reference_tokens
            for message in messages
        ]
        overhead = self._tokens(messages, generation_prompt=True) - sum(message_tokens)
        return message_tokens, overhead

    def _messages(self, request: Any) -> list[dict[str, str]]:
        raw = pb_utils.get_input_tensor_by_name(request, "messages").as_numpy().reshape(-1)[0]
        if isinstance(raw, bytes):
            if len(raw) > self._max_request_bytes:
                raise InvalidRequestError(f"messages is over {self._max_request_bytes} bytes")
            raw = raw.decode("utf-8", errors="replace")
        try:
            messages = json.loads(str(raw))
        except ValueError as error:
            raise InvalidRequestError(f"messages is not JSON: {error}") from None
        return checked_messages(messages, empty="messages must be a non-empty list")

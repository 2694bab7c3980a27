"""parley-tiny on Triton's Python backend: a decoupled model that streams one response per token.

Each request is served on a worker thread so that one stub process streams many requests
at once (execute() returns at once, as decoupled models may). Between tokens the worker
checks whether the client cancelled; it always ends the stream with
TRITONSERVER_RESPONSE_COMPLETE_FINAL, and a stream that was not cancelled ends with a
response that carries the token usage, so that a client needs no Triton-specific flag to
know it has everything.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]
from tiny_lm import MarkovChain, piece, tokenize

_MODEL = "parley-tiny"


def _parameters(model_config: Mapping[str, Any]) -> dict[str, str]:
    """config.pbtxt `parameters` as plain strings."""
    raw: Mapping[str, Mapping[str, str]] = model_config.get("parameters", {})
    return {name: value["string_value"] for name, value in raw.items()}


def _bytes_tensor(name: str, value: str) -> Any:
    return pb_utils.Tensor(name, np.array([value.encode("utf-8")], dtype=np.object_))


def _int32_tensor(name: str, value: int) -> Any:
    return pb_utils.Tensor(name, np.array([value], dtype=np.int32))


class _InvalidRequestError(ValueError):
    """The request cannot be served as sent (the client's mistake, INVALID_ARG)."""


class TritonPythonModel:
    """The entry point the Python backend looks for."""

    def initialize(self, args: Mapping[str, str]) -> None:
        parameters = _parameters(json.loads(args["model_config"]))
        self._delay_s = int(parameters["token_delay_ms"]) / 1000
        self._context_window = int(parameters["context_window"])
        self._max_output_tokens = int(parameters["max_output_tokens"])
        self._default_max_tokens = int(parameters["default_max_tokens"])
        corpus = (Path(__file__).parent / parameters["corpus_file"]).read_text(encoding="utf-8")
        self._chain = MarkovChain(corpus)
        self._closing = threading.Event()
        self._workers = ThreadPoolExecutor(
            max_workers=int(parameters["max_concurrent_requests"]), thread_name_prefix=_MODEL
        )
        # Says which interpreter and numpy the stub really runs (see docs/stack/triton.md).
        pb_utils.Logger.log_info(
            f"{_MODEL}: trained on {self._chain.corpus_tokens} tokens ({self._chain.states} states); "
            f"python {sys.version.split()[0]} at {sys.prefix}, numpy {np.__version__}"
        )

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            self._workers.submit(self._serve, request)

    def finalize(self) -> None:
        """Stop the workers between tokens and wait for them, so that every stream is closed."""
        self._closing.set()
        self._workers.shutdown(wait=True, cancel_futures=True)

    def _serve(self, request: Any) -> None:
        sender = request.get_response_sender()
        try:
            self._stream(request, sender)
        except _InvalidRequestError as error:
            self._fail(sender, str(error), pb_utils.TritonError.INVALID_ARG)
        except Exception as error:
            pb_utils.Logger.log_error(f"{_MODEL}: request {request.request_id()!r} failed: {error!r}")
            self._fail(sender, f"{_MODEL} failed: {error}", pb_utils.TritonError.INTERNAL)

    @staticmethod
    def _fail(sender: Any, message: str, code: int) -> None:
        response = pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
        sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _read(self, request: Any) -> tuple[str, int]:
        prompt_tensor = pb_utils.get_input_tensor_by_name(request, "prompt")
        prompt = prompt_tensor.as_numpy().reshape(-1)[0]
        if isinstance(prompt, bytes):
            prompt = prompt.decode("utf-8")
        max_tokens_tensor = pb_utils.get_input_tensor_by_name(request, "max_tokens")
        if max_tokens_tensor is None:
            max_tokens = self._default_max_tokens
        else:
            max_tokens = int(max_tokens_tensor.as_numpy().reshape(-1)[0])
        if not 1 <= max_tokens <= self._max_output_tokens:
            raise _InvalidRequestError(
                f"max_tokens must be between 1 and {self._max_output_tokens}, got {max_tokens}"
            )
        return str(prompt), max_tokens

    def _stream(self, request: Any, sender: Any) -> None:
        prompt, max_tokens = self._read(request)
        prompt_tokens = tokenize(prompt)
        if len(prompt_tokens) + max_tokens > self._context_window:
            raise _InvalidRequestError(
                f"prompt ({len(prompt_tokens)} tokens) plus max_tokens ({max_tokens}) exceeds "
                f"the context window of {self._context_window} tokens"
            )
        previous = prompt_tokens[-1] if prompt_tokens else None
        generated = 0
        for token in self._chain.generate(prompt):
            if generated == max_tokens:
                break
            # Each token "takes" token_delay_ms, so that streaming and cancelling can be seen.
            self._closing.wait(self._delay_s)
            if sender.is_cancelled():
                pb_utils.Logger.log_info(
                    f"{_MODEL}: request {request.request_id()!r} cancelled after {generated} tokens"
                )
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return
            if self._closing.is_set():
                raise RuntimeError("the model is being unloaded")
            text = piece(previous, token)
            sender.send(
                pb_utils.InferenceResponse([_bytes_tensor("text", text), _int32_tensor("index", generated)])
            )
            previous = token
            generated += 1
        usage = [
            _int32_tensor("prompt_tokens", len(prompt_tokens)),
            _int32_tensor("completion_tokens", generated),
            # The chain never runs dry, so only max_tokens ends a stream that was not cancelled.
            _bytes_tensor("finish_reason", "length"),
        ]
        sender.send(pb_utils.InferenceResponse(usage), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

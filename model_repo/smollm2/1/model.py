"""smollm2 on Triton's Python backend: SmolLM2-135M-Instruct on llama.cpp, one response per token.

A decoupled model with parley-tiny's tensors. A request's conversation goes through the
model's own chat template (read from the GGUF), is tokenized by the model's tokenizer, and
is generated token by token; each token's text goes out as soon as it is made. Between
tokens the worker checks whether the client cancelled. Every stream ends with
TRITONSERVER_RESPONSE_COMPLETE_FINAL, and one that was not cancelled ends with a response
that carries the usage in the model's own tokens.

llama.cpp contexts are not thread-safe: the stub holds a few ("contexts" in config.pbtxt)
and each stream takes one for its whole length. Only as many streams evaluate at once as
the cores hold; the others wait for their turn (`_Turns`).
"""

from __future__ import annotations

import codecs
import json
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
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

_MODEL = "smollm2"
# ChatML, the template SmolLM2-Instruct was trained with: <|im_start|>role\ntext<|im_end|>.
_CHATML_TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)(?:<\|im_end\|>\n?|\Z)", re.DOTALL)
#: How often a stream that waits for a free context looks for a cancel.
_WAIT_S = 0.05


def _parameters(model_config: Mapping[str, Any]) -> dict[str, str]:
    """config.pbtxt `parameters` as plain strings."""
    raw: Mapping[str, Mapping[str, str]] = model_config.get("parameters", {})
    return {name: value["string_value"] for name, value in raw.items()}


def _bytes_tensor(name: str, value: str) -> Any:
    return pb_utils.Tensor(name, np.array([value.encode("utf-8")], dtype=np.object_))


def _int32_tensor(name: str, value: int) -> Any:
    return pb_utils.Tensor(name, np.array([value], dtype=np.int32))


def _prompt_messages(prompt: str) -> list[dict[str, str]]:
    """The turns of a ChatML prompt (as parley-scripted reads it); any other prompt is one user
    turn. A last, empty assistant turn is the generation prompt, which the template adds anyway."""
    turns = [{"role": role, "content": text} for role, text in _CHATML_TURN.findall(prompt)]
    if not turns:
        return [{"role": "user", "content": prompt}] if prompt.strip() else []
    if turns[-1] == {"role": "assistant", "content": ""}:
        turns.pop()
    return turns


def _text_response(text: str, index: int) -> Any:
    return pb_utils.InferenceResponse([_bytes_tensor("text", text), _int32_tensor("index", index)])


class _Turns:
    """The cores, lent to `capacity` streams at a time in slices, round robin in arrival order.

    llama.cpp spreads each evaluation over its threads, which wait for each other at every
    step: when more threads want the cores than there are, every stream crawls (two streams
    of two threads on 2 cores: 1 token/s together instead of ~90). So only as many streams
    evaluate at once as the cores hold (cores // threads). Handing over after every token is
    no good either: a switch costs about as much as a token. A stream keeps its place for a
    slice of time, then passes it on if another stream waits.
    """

    def __init__(self, capacity: int, slice_s: float) -> None:
        self._capacity = capacity
        self._slice_s = slice_s
        self._changed = threading.Condition()
        #: Tickets in arrival order; the first `capacity` of them hold the cores.
        self._queue: list[object] = []

    def take(self) -> _Turn:
        turn = _Turn()
        self._join(turn)
        return turn

    def _join(self, turn: _Turn) -> None:
        with self._changed:
            self._queue.append(turn)
            self._changed.wait_for(lambda: self._queue.index(turn) < self._capacity)
        turn.since = time.monotonic()

    def give_back(self, turn: _Turn) -> None:
        with self._changed:
            self._queue.remove(turn)
            self._changed.notify_all()

    def pass_on_if_due(self, turn: _Turn) -> None:
        """Called by a holder between tokens: its slice is over and another stream waits."""
        if time.monotonic() - turn.since < self._slice_s:
            return
        with self._changed:
            crowded = len(self._queue) > self._capacity
        if not crowded:
            turn.since = time.monotonic()
            return
        self.give_back(turn)
        self._join(turn)


class _Turn:
    """One stream's place in _Turns."""

    since = 0.0


class TritonPythonModel:
    """The entry point the Python backend looks for."""

    def initialize(self, args: Mapping[str, str]) -> None:
        parameters = _parameters(json.loads(args["model_config"]))
        self._context_window = int(parameters["context_window"])
        self._max_output_tokens = int(parameters["max_output_tokens"])
        self._default_max_tokens = int(parameters["default_max_tokens"])
        self._default_temperature = float(parameters["default_temperature"])
        self._top_p = float(parameters["top_p"])
        self._repeat_penalty = float(parameters["repeat_penalty"])
        cores = os.cpu_count() or 1
        threads = int(parameters["threads"]) or max(1, min(cores // 2, 4))
        gguf = weights_path(Path(__file__).parent, parameters["weights_package"], parameters["weights_file"])

        started = time.monotonic()
        self._contexts: queue.SimpleQueue[llama_cpp.Llama] = queue.SimpleQueue()
        self._all_contexts: list[llama_cpp.Llama] = []
        for _ in range(int(parameters["contexts"])):
            llm = llama_cpp.Llama(
                model_path=str(gguf),
                n_ctx=self._context_window,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
            self._all_contexts.append(llm)
            self._contexts.put(llm)
        # The same formatter llama-cpp-python's own chat completion uses for this GGUF, so both
        # backends render (and count) a conversation alike.
        self._formatter = chat_formatter(self._all_contexts[0])
        self._turns = _Turns(max(1, cores // threads), int(parameters["turn_ms"]) / 1000)
        self._closing = threading.Event()
        self._workers = ThreadPoolExecutor(
            max_workers=int(parameters["max_concurrent_requests"]), thread_name_prefix=_MODEL
        )
        pb_utils.Logger.log_info(
            f"{_MODEL}: loaded {gguf.name} into {len(self._all_contexts)} contexts of "
            f"{self._context_window} tokens, {threads} threads each, "
            f"{max(1, cores // threads)} evaluating at once, in "
            f"{time.monotonic() - started:.2f}s; llama-cpp-python {llama_cpp.__version__}, "
            f"python {sys.version.split()[0]} at {sys.prefix}, numpy {np.__version__}"
        )

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            self._workers.submit(self._serve, request)

    def finalize(self) -> None:
        """Stop the workers between tokens and wait for them, so that every stream is closed."""
        self._closing.set()
        self._workers.shutdown(wait=True, cancel_futures=True)
        for llm in self._all_contexts:
            llm.close()

    def _serve(self, request: Any) -> None:
        sender = request.get_response_sender()
        try:
            self._stream(request, sender)
        except InvalidRequestError as error:
            self._fail(sender, str(error), pb_utils.TritonError.INVALID_ARG)
        except Exception as error:
            pb_utils.Logger.log_error(f"{_MODEL}: request {request.request_id()!r} failed: {error!r}")
            self._fail(sender, f"{_MODEL} failed: {error}", pb_utils.TritonError.INTERNAL)

    @staticmethod
    def _fail(sender: Any, message: str, code: int) -> None:
        response = pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
        sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    @staticmethod
    def _text_input(request: Any, name: str) -> str | None:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            return None
        value = tensor.as_numpy().reshape(-1)[0]
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    def _messages(self, request: Any) -> list[dict[str, str]]:
        raw = self._text_input(request, "messages")
        prompt = self._text_input(request, "prompt")
        if (raw is None) == (prompt is None):
            raise InvalidRequestError("send exactly one of messages and prompt")
        if prompt is not None:
            messages: object = _prompt_messages(prompt)
        else:
            try:
                messages = json.loads(str(raw))
            except ValueError as error:
                raise InvalidRequestError(f"messages is not JSON: {error}") from None
        return checked_messages(messages, empty="the conversation is empty")

    def _sampling(self, request: Any) -> tuple[int, float]:
        max_tokens_tensor = pb_utils.get_input_tensor_by_name(request, "max_tokens")
        if max_tokens_tensor is None:
            max_tokens = self._default_max_tokens
        else:
            max_tokens = int(max_tokens_tensor.as_numpy().reshape(-1)[0])
        if not 1 <= max_tokens <= self._max_output_tokens:
            raise InvalidRequestError(
                f"max_tokens must be between 1 and {self._max_output_tokens}, got {max_tokens}"
            )
        temperature_tensor = pb_utils.get_input_tensor_by_name(request, "temperature")
        if temperature_tensor is not None:
            temperature = float(temperature_tensor.as_numpy().reshape(-1)[0])
        else:
            # A catalog backend's `parameters` arrive as request parameters.
            parameter = json.loads(request.parameters() or "{}").get("temperature")
            if parameter is None:
                temperature = self._default_temperature
            elif isinstance(parameter, int | float | str):
                try:
                    temperature = float(parameter)
                except ValueError:
                    raise InvalidRequestError(f"temperature is not a number: {parameter!r}") from None
            else:
                raise InvalidRequestError(f"temperature is not a number: {parameter!r}")
        if not 0.0 <= temperature <= 2.0:
            raise InvalidRequestError(f"temperature must be between 0 and 2, got {temperature}")
        return max_tokens, temperature

    def _prompt_tokens(self, llm: llama_cpp.Llama, messages: list[dict[str, str]]) -> list[int]:
        try:
            return conversation_tokens(llm, self._formatter, messages)
        except ValueError as error:  # the template's raise_exception
            raise InvalidRequestError(f"the chat template refused the messages: {error}") from None

    def _take_context(self, request: Any, sender: Any) -> llama_cpp.Llama | None:
        """A free llama.cpp context, or None when the client cancelled while it waited."""
        while True:
            if sender.is_cancelled():
                return None
            if self._closing.is_set():
                raise RuntimeError("the model is being unloaded")
            try:
                return self._contexts.get(timeout=_WAIT_S)
            except queue.Empty:
                continue

    def _cancelled(self, request: Any, sender: Any, generated: int) -> None:
        request_id = request.request_id()
        pb_utils.Logger.log_info(f"{_MODEL}: request {request_id!r} cancelled after {generated} tokens")
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _stream(self, request: Any, sender: Any) -> None:
        messages = self._messages(request)
        max_tokens, temperature = self._sampling(request)
        llm = self._take_context(request, sender)
        if llm is None:
            self._cancelled(request, sender, 0)
            return
        try:
            self._generate(request, sender, llm, messages, max_tokens, temperature)
        finally:
            self._contexts.put(llm)

    def _generate(
        self,
        request: Any,
        sender: Any,
        llm: llama_cpp.Llama,
        messages: list[dict[str, str]],
        max_tokens: int,
        temperature: float,
    ) -> None:
        started = time.monotonic()
        prompt_tokens = self._prompt_tokens(llm, messages)
        if len(prompt_tokens) + max_tokens > self._context_window:
            raise InvalidRequestError(
                f"prompt ({len(prompt_tokens)} tokens) plus max_tokens ({max_tokens}) exceeds "
                f"the context window of {self._context_window} tokens"
            )
        # generate() reuses the context's cache for the prompt's prefix that it evaluated last
        # time (a conversation's earlier turns), and evaluates only the rest.
        tokens = llm.generate(
            prompt_tokens,
            temp=temperature,
            top_p=self._top_p,
            top_k=40,
            min_p=0.05,
            repeat_penalty=self._repeat_penalty,
        )
        turn = self._turns.take()
        try:
            self._run(request, sender, llm, tokens, turn, max_tokens, len(prompt_tokens), started)
        finally:
            self._turns.give_back(turn)

    def _run(
        self,
        request: Any,
        sender: Any,
        llm: llama_cpp.Llama,
        tokens: Iterator[int],
        turn: _Turn,
        max_tokens: int,
        prompt_tokens: int,
        started: float,
    ) -> None:
        """Stream the tokens while holding the turns; pass them on between tokens when due."""
        vocab = llm._model.vocab
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        generated = index = 0
        first_token_s = None
        finish_reason = "length"
        while True:
            self._turns.pass_on_if_due(turn)
            token = next(tokens)
            if sender.is_cancelled():
                self._cancelled(request, sender, generated)
                return
            if self._closing.is_set():
                raise RuntimeError("the model is being unloaded")
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                finish_reason = "stop"
                break
            generated += 1
            if first_token_s is None:
                first_token_s = time.monotonic() - started
            text = decoder.decode(llm.detokenize([token]))
            if text:
                sender.send(_text_response(text, index))
                index += 1
            if generated == max_tokens:
                break
        tail = decoder.decode(b"", final=True)
        if tail:
            sender.send(_text_response(tail, index))
        usage = [
            _int32_tensor("prompt_tokens", prompt_tokens),
            _int32_tensor("completion_tokens", generated),
            _bytes_tensor("finish_reason", finish_reason),
        ]
        sender.send(pb_utils.InferenceResponse(usage), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        elapsed = time.monotonic() - started
        pb_utils.Logger.log_info(
            f"{_MODEL}: request {request.request_id()!r}: {prompt_tokens} prompt tokens, "
            f"{generated} generated ({finish_reason}), "
            f"first token {1000 * (first_token_s or elapsed):.0f} ms, {elapsed:.2f}s in all"
        )

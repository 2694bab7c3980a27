"""parley-scripted on Triton's Python backend: a decoupled model whose every stream follows a script.

Every stream is a task on one asyncio loop that runs in a thread of the stub, so one stub
holds thousands of slow streams (a benchmark's 200 concurrent streams are 200 tasks, not 200
threads) and a stream's schedule is kept against the clock: token i is due at arrival +
ttft + i / tokens_per_second, whatever sending the earlier ones cost. Between tokens, and
every 50 ms of a long wait, a stream checks whether the client cancelled; a cancelled
stream logs one line and ends with only the FINAL flag. A stream that was not cancelled
ends with a response carrying the usage, or with an error (a scripted failure, a bad
request), always flagged FINAL.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]
from scripted_reply import (
    Script,
    ScriptError,
    Turn,
    chatml,
    parse_messages,
    parse_turns,
    plan,
    script_for,
    tokenize,
)

_MODEL = "parley-scripted"
# How often a long wait (a slow first token, a slow stream) looks for a cancel.
_CANCEL_POLL_S = 0.05


def _parameters(model_config: Mapping[str, Any]) -> dict[str, str]:
    """config.pbtxt `parameters` as plain strings."""
    raw: Mapping[str, Mapping[str, str]] = model_config.get("parameters", {})
    return {name: value["string_value"] for name, value in raw.items()}


def _unavailable() -> Any:
    """UNAVAILABLE, what a router fails over on. pb_utils gets TritonError only once the stub runs."""
    return pb_utils.TritonError.UNAVAILABLE


def _bytes_tensor(name: str, value: str) -> Any:
    return pb_utils.Tensor(name, np.array([value.encode("utf-8")], dtype=np.object_))


def _int32_tensor(name: str, value: int) -> Any:
    return pb_utils.Tensor(name, np.array([value], dtype=np.int32))


class _ScriptedFailureError(Exception):
    """The failure a request asked for with fail_after_tokens."""


class TritonPythonModel:
    """The entry point the Python backend looks for."""

    def initialize(self, args: Mapping[str, str]) -> None:
        parameters = _parameters(json.loads(args["model_config"]))
        self._context_window = int(parameters["context_window"])
        self._max_output_tokens = int(parameters["max_output_tokens"])
        self._default_max_tokens = int(parameters["default_max_tokens"])
        self._defaults = Script().updated(
            {
                "ttft_ms": parameters["default_ttft_ms"],
                "tokens_per_second": parameters["default_tokens_per_second"],
            },
            source="config parameter",
            strict=True,
        )
        self._loop = asyncio.new_event_loop()
        self._streams: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name=_MODEL, daemon=True)
        self._thread.start()
        pb_utils.Logger.log_info(
            f"{_MODEL}: defaults {self._defaults}; python {sys.version.split()[0]} at {sys.prefix}, "
            f"numpy {np.__version__}"
        )

    def execute(self, requests: list[Any]) -> None:
        arrived = time.monotonic()
        for request in requests:
            self._loop.call_soon_threadsafe(self._start, request, arrived)

    def finalize(self) -> None:
        """End every open stream with an error, then stop the loop."""
        closing = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
        try:
            closing.result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def _start(self, request: Any, arrived: float) -> None:
        task = self._loop.create_task(self._serve(request, arrived))
        self._streams.add(task)
        task.add_done_callback(self._streams.discard)

    async def _close(self) -> None:
        streams = list(self._streams)
        for stream in streams:
            stream.cancel()
        await asyncio.gather(*streams, return_exceptions=True)

    async def _serve(self, request: Any, arrived: float) -> None:
        sender = request.get_response_sender()
        try:
            await self._stream(request, sender, arrived)
        except asyncio.CancelledError:
            # Only finalize() cancels a stream: the model is being unloaded.
            self._fail(sender, f"{_MODEL} is being unloaded", _unavailable())
            raise
        except ScriptError as error:
            self._fail(sender, f"{_MODEL}: {error}", pb_utils.TritonError.INVALID_ARG)
        except _ScriptedFailureError as failure:
            pb_utils.Logger.log_info(f"{_MODEL}: request {request.request_id()!r} {failure}")
            self._fail(sender, f"{_MODEL}: {failure}", _unavailable())
        except Exception as error:
            pb_utils.Logger.log_error(f"{_MODEL}: request {request.request_id()!r} failed: {error!r}")
            self._fail(sender, f"{_MODEL} failed: {error}", pb_utils.TritonError.INTERNAL)

    @staticmethod
    def _fail(sender: Any, message: str, code: Any) -> None:
        try:
            response = pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
            sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as error:
            # Never leave a stream open: a client would wait for it forever.
            pb_utils.Logger.log_error(f"{_MODEL}: could not send {message!r}: {error!r}")
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    @staticmethod
    def _text_input(request: Any, name: str) -> str | None:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            return None
        value = tensor.as_numpy().reshape(-1)[0]
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    def _conversation(self, request: Any) -> tuple[list[Turn], int]:
        """The turns, and the prompt's length in tokens (of the ChatML a `messages` input renders to)."""
        messages = self._text_input(request, "messages")
        prompt = self._text_input(request, "prompt")
        if (messages is None) == (prompt is None):
            raise ScriptError("send exactly one of messages and prompt")
        if prompt is not None:
            return parse_turns(prompt), len(tokenize(prompt))
        turns = parse_messages(str(messages))
        return turns, len(tokenize(chatml(turns)))

    def _read(self, request: Any) -> tuple[list[Turn], int, int, Script]:
        turns, prompt_tokens = self._conversation(request)
        max_tokens_tensor = pb_utils.get_input_tensor_by_name(request, "max_tokens")
        if max_tokens_tensor is None:
            max_tokens = self._default_max_tokens
        else:
            max_tokens = int(max_tokens_tensor.as_numpy().reshape(-1)[0])
        if not 1 <= max_tokens <= self._max_output_tokens:
            raise ScriptError(f"max_tokens must be between 1 and {self._max_output_tokens}, got {max_tokens}")
        # Parameters this model does not know are left alone: a router may send the same
        # options (temperature, ...) to every model.
        parameters = json.loads(request.parameters() or "{}")
        script = self._defaults.updated(parameters, source="parameter", strict=False)
        return turns, prompt_tokens, max_tokens, script

    async def _stream(self, request: Any, sender: Any, arrived: float) -> None:
        turns, prompt_tokens, max_tokens, script = self._read(request)
        if prompt_tokens + max_tokens > self._context_window:
            raise ScriptError(
                f"prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds "
                f"the context window of {self._context_window} tokens"
            )
        script = script_for(turns, script)
        reply = plan(turns, script, max_tokens)

        first_due = arrived + script.ttft_ms / 1000
        interval = 1 / script.tokens_per_second if script.tokens_per_second else 0.0
        for index in range(len(reply.tokens)):
            if not await self._wait_until(first_due + index * interval, sender):
                pb_utils.Logger.log_info(
                    f"{_MODEL}: request {request.request_id()!r} cancelled after {index} tokens"
                )
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return
            if index == script.fail_after_tokens:
                raise _ScriptedFailureError(f"scripted failure after {index} tokens")
            text = reply.piece(index)
            sender.send(
                pb_utils.InferenceResponse([_bytes_tensor("text", text), _int32_tensor("index", index)])
            )
        if script.fail_after_tokens == len(reply.tokens):
            raise _ScriptedFailureError(f"scripted failure after {len(reply.tokens)} tokens")
        usage = [
            _int32_tensor("prompt_tokens", prompt_tokens),
            _int32_tensor("completion_tokens", len(reply.tokens)),
            _bytes_tensor("finish_reason", reply.finish_reason),
        ]
        sender.send(pb_utils.InferenceResponse(usage), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    @staticmethod
    async def _wait_until(due: float, sender: Any) -> bool:
        """Wait until `due` (monotonic seconds); False as soon as the client has cancelled."""
        while True:
            if sender.is_cancelled():
                return False
            remaining = due - time.monotonic()
            if remaining <= 0:
                # Let the other streams run even when this one sends without waiting.
                await asyncio.sleep(0)
                return True
            await asyncio.sleep(min(remaining, _CANCEL_POLL_S))

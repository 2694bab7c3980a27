"""Triton: a decoupled model streamed over gRPC (`ModelStreamInfer`), one request per stream.

The models of model_repo/ take the conversation as `messages` (JSON) and `max_tokens`, and
answer one response per token (`text`), then one last response with `prompt_tokens`,
`completion_tokens` and `finish_reason` (model_repo/README.md). A model without a
`messages` input (parley-tiny) gets the conversation as a ChatML `prompt` instead; the
backend reads which from the model's metadata once.

Every stream sends the `triton_grpc_error: true` header: without it Triton reports a
model's error as a message inside the stream, without its status code, and INVALID_ARG (a
request no backend could serve) could not be told apart from UNAVAILABLE (fail over). With
it, the first error ends the call with the model's own status.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import grpc
import numpy as np
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from tritonclient.grpc import InferInput, InferResult
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from svc_router.backends._base import BackendError, BackendEvent, BackendHealth, Finish, Generation, Piece

#: Codes that say the request itself is wrong: another backend would refuse it too.
_NOT_RETRYABLE = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
_STREAM_HEADERS = {"triton_grpc_error": "true"}
_tracer = trace.get_tracer("parley.triton")


class TritonBackend:
    """One Triton model. `client` is shared by every backend of one Triton server.

    The client belongs to whoever made it: `close()` leaves it open.
    """

    def __init__(
        self,
        client: InferenceServerClient,
        model: str,
        parameters: Mapping[str, bool | int | float | str] | None = None,
        key: str | None = None,
        *,
        probe_timeout_s: float = 2.0,
    ) -> None:
        self._client = client
        self.model = model
        self.parameters = dict(parameters or {})
        self._key = key or f"triton/{model}"
        self._probe_timeout_s = probe_timeout_s
        #: Whether the model reads `messages` (else a ChatML `prompt`); None until known.
        self._takes_messages: bool | None = None

    @property
    def key(self) -> str:
        return self._key

    async def stream(self, generation: Generation) -> AsyncGenerator[BackendEvent, None]:
        """Pieces, then one Finish; closing the generator early cancels the request at Triton."""
        request = {
            "model_name": self.model,
            "inputs": await self._inputs(generation),
            "request_id": generation.request_id,
            "parameters": dict(self.parameters) or None,
        }
        # A CLIENT span for the stream; its traceparent header makes Triton's own spans (when
        # Triton traces) its children. Never the current span: a generator's context is not
        # its caller's once it is suspended.
        span = _tracer.start_span(
            "triton ModelStreamInfer",
            kind=SpanKind.CLIENT,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": "inference.GRPCInferenceService",
                "rpc.method": "ModelStreamInfer",
                "parley.model": self.model,
            },
        )
        headers = dict(_STREAM_HEADERS)
        propagate.inject(headers, context=trace.set_span_in_context(span))
        try:
            responses = self._client.stream_infer(_once(request), headers=headers)
        except InferenceServerException as error:
            span.set_status(Status(StatusCode.ERROR, "InferenceServerException"))
            span.end()
            raise self._error(str(error)) from None
        finished = False
        try:
            async for result, failure in responses:
                if failure is not None:
                    # An error Triton reports outside the model (an unknown or unloaded
                    # model) still comes inside the stream, without a status.
                    raise self._error(str(failure))
                finish = self._finish(result)
                if finish is not None:
                    finished = True
                    yield finish
                    return
                yield Piece(_text(result, "text"))
            raise BackendError(
                "the model stopped answering",
                detail=f"{self._key}: the stream ended without the usage response",
            )
        except grpc.aio.AioRpcError as error:
            span.set_status(Status(StatusCode.ERROR, error.code().name))
            raise self._error(f"{error.code().name}: {error.details()}", error.code()) from None
        except BackendError as error:
            span.set_status(Status(StatusCode.ERROR, error.detail or str(error)))
            raise
        finally:
            if not finished:
                # The model sees the cancel (`is_cancelled()`) and stops generating. After
                # the last response the call is over and this would do nothing.
                responses.cancel()
            span.end()

    async def probe(self) -> BackendHealth:
        """Whether Triton has the model loaded and ready."""
        try:
            ready = await self._client.is_model_ready(self.model, client_timeout=self._probe_timeout_s)
        except InferenceServerException as error:
            return BackendHealth(ready=False, detail=f"{self._key}: {error}")
        if not ready:
            return BackendHealth(ready=False, detail=f"{self._key}: the model is not ready")
        return BackendHealth(ready=True)

    async def close(self) -> None:
        """Nothing to release: the shared client is closed by its owner."""

    async def _inputs(self, generation: Generation) -> list[InferInput]:
        if self._takes_messages is None:
            try:
                metadata = await self._client.get_model_metadata(
                    self.model, as_json=True, client_timeout=self._probe_timeout_s
                )
            except InferenceServerException as error:
                raise self._error(str(error)) from None
            inputs = metadata.get("inputs", [])
            self._takes_messages = any(tensor.get("name") == "messages" for tensor in inputs)
        if self._takes_messages:
            name = "messages"
            text = json.dumps([{"role": m.role, "content": m.content} for m in generation.messages])
        else:
            name = "prompt"
            text = _chatml(generation)
        conversation = InferInput(name, [1], "BYTES")
        conversation.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
        max_tokens = InferInput("max_tokens", [1], "INT32")
        max_tokens.set_data_from_numpy(np.array([generation.max_tokens], dtype=np.int32))
        return [conversation, max_tokens]

    def _finish(self, result: InferResult) -> Finish | None:
        completion_tokens = result.as_numpy("completion_tokens")
        if completion_tokens is None:
            return None
        prompt_tokens = result.as_numpy("prompt_tokens")
        reason = _text(result, "finish_reason")
        return Finish(
            reason="length" if reason == "length" else "stop",
            prompt_tokens=int(prompt_tokens[0]) if prompt_tokens is not None else 0,
            completion_tokens=int(completion_tokens[0]),
        )

    def _error(self, detail: str, code: grpc.StatusCode | None = None) -> BackendError:
        if code in _NOT_RETRYABLE:
            return BackendError(
                "the model cannot serve this request (it may be too long)",
                detail=f"{self._key}: {detail}",
                retryable=False,
            )
        return BackendError("the model is unavailable", detail=f"{self._key}: {detail}")


def _chatml(generation: Generation) -> str:
    """The conversation as ChatML turns, ending where the assistant's answer starts."""
    turns = "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in generation.messages)
    return turns + "<|im_start|>assistant\n"


async def _once(request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    yield request


def _text(result: InferResult, name: str) -> str:
    value = result.as_numpy(name)
    if value is None:
        return ""
    item = value.reshape(-1)[0]
    return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)

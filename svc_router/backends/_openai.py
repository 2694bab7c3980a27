"""An OpenAI-compatible server (vLLM, llama.cpp's server, a hosted provider): streamed chat completions.

`POST {base_url}/chat/completions` with `stream: true` answers server-sent events, one
`data: {chunk}` per delta and `data: [DONE]` at the end. The usage comes in a last chunk
with no choices when the server honours `stream_options.include_usage` (OpenAI, vLLM).
llama-cpp-python's server (0.3.36, the local stack's) ignores `stream_options` and sends no
usage when streaming; then the completion is counted as the pieces received (that server
sends one chunk per token) and the prompt as 0 tokens, since only the server could count it.

The events are read as bytes, one line at a time (aiohttp splits on "\\n"; a "\\r" before
it is stripped with the other whitespace), and only `data:` lines are decoded, by the JSON
parser itself: the per-token cost is one line read and one `json.loads`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Literal

import aiohttp
from aiohttp.http_exceptions import LineTooLong

from svc_router.backends._base import BackendError, BackendEvent, BackendHealth, Finish, Generation, Piece

#: 4xx statuses that say the server is busy or slow, not that the request is wrong.
_RETRYABLE_4XX = frozenset({408, 409, 425, 429})
#: How much of an error body goes into the log.
_DETAIL_BYTES = 500
_DATA = b"data:"
_DONE = b"[DONE]"


class OpenAIBackend:
    """One model of one OpenAI-compatible endpoint.

    `http` is shared by every backend and owned by whoever made it (`close()` leaves it
    open); its timeouts apply to each request. The probe has its own (`probe_timeout_s`).
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        api_key: str | None,
        model: str,
        parameters: Mapping[str, bool | int | float | str] | None = None,
        key: str | None = None,
        *,
        probe_timeout_s: float = 2.0,
    ) -> None:
        self._http = http
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self.parameters = dict(parameters or {})
        self._key = key or f"openai/{model}"
        self._probe_timeout = aiohttp.ClientTimeout(total=probe_timeout_s)

    @property
    def key(self) -> str:
        return self._key

    async def stream(self, generation: Generation) -> AsyncGenerator[BackendEvent, None]:
        """Pieces, then one Finish; closing the generator early closes the HTTP connection."""
        body: dict[str, Any] = {
            # The catalog's extra fields first, so that none can replace what the router sends.
            **self.parameters,
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in generation.messages],
            "max_tokens": generation.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        # No X-Request-Id: the API defines none, and llama-cpp-python's server answers 400
        # to one that is not a UUID. The router's logs name the request id with this key.
        url = f"{self.base_url}/chat/completions"
        try:
            async with self._http.post(url, json=body, headers=self._headers) as response:
                if response.status != 200:
                    raise await self._status_error(response)
                finished = False
                try:
                    async with contextlib.aclosing(self._events(response)) as events:
                        async for event in events:
                            finished = isinstance(event, Finish)
                            yield event
                finally:
                    if not finished:
                        # Closed early, cancelled or failed: drop the connection, so that the
                        # server sees the client leave and stops generating. After the Finish,
                        # leaving the block returns a fully read connection to the pool.
                        response.close()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise BackendError(
                "the model is unavailable", detail=f"{self._key}: {type(error).__name__}: {error}"
            ) from None
        except LineTooLong as error:
            raise BackendError(
                "the model sent an answer that could not be read", detail=f"{self._key}: {error}"
            ) from None

    async def _events(self, response: aiohttp.ClientResponse) -> AsyncGenerator[BackendEvent, None]:
        pieces = 0
        reason: Literal["stop", "length"] | None = None
        usage: Mapping[str, Any] | None = None
        async for line in response.content:
            # Server-sent events: "data:" lines carry the chunks; comments (":"), "event:"
            # and "id:" lines, and the blank lines between events carry nothing for us.
            if not line.startswith(_DATA):
                continue
            data = line[len(_DATA) :].strip()
            if data == _DONE:
                break
            chunk = self._chunk(data)
            if chunk.get("usage"):
                usage = chunk["usage"]
            choices = chunk.get("choices") or []
            if not choices:
                continue
            choice = choices[0]
            text = (choice.get("delta") or {}).get("content")
            if text:
                pieces += 1
                yield Piece(text)
            if choice.get("finish_reason"):
                reason = "length" if choice["finish_reason"] == "length" else "stop"
        if reason is None:
            raise BackendError(
                "the model stopped answering",
                detail=f"{self._key}: the stream ended without a finish_reason",
            )
        yield Finish(
            reason=reason,
            prompt_tokens=int(usage.get("prompt_tokens", 0)) if usage else 0,
            # Without a usage chunk, each chunk was one token (see the module's docstring).
            completion_tokens=int(usage.get("completion_tokens", pieces)) if usage else pieces,
        )

    def _chunk(self, data: bytes) -> Mapping[str, Any]:
        try:
            chunk = json.loads(data)
        except ValueError:  # not JSON, or not UTF-8
            raise BackendError(
                "the model sent an answer that could not be read",
                detail=f"{self._key}: not JSON: {_text(data)!r}",
            ) from None
        if not isinstance(chunk, dict):
            raise BackendError(
                "the model sent an answer that could not be read",
                detail=f"{self._key}: not an object: {_text(data)!r}",
            )
        if chunk.get("error"):
            # Some servers report an error inside an open stream (vLLM, hosted providers).
            raise BackendError(
                "the model failed while answering",
                detail=f"{self._key}: {json.dumps(chunk['error'])[:_DETAIL_BYTES]}",
            )
        return chunk

    async def _status_error(self, response: aiohttp.ClientResponse) -> BackendError:
        # The start of the body is enough for the log; the rest is never read (the
        # connection is closed, not reused, when the response is left unread).
        body = b""
        while len(body) < _DETAIL_BYTES and (more := await response.content.read(_DETAIL_BYTES - len(body))):
            body += more
        status = response.status
        detail = f"{self._key}: HTTP {status}: {_text(body)}"
        if 400 <= status < 500 and status not in _RETRYABLE_4XX:
            return BackendError("the model cannot serve this request", detail=detail, retryable=False)
        return BackendError("the model is unavailable", detail=detail)

    async def probe(self) -> BackendHealth:
        """Whether the endpoint answers `GET /models` and lists the model."""
        try:
            async with self._http.get(
                f"{self.base_url}/models", headers=self._headers, timeout=self._probe_timeout
            ) as response:
                if response.status != 200:
                    return BackendHealth(
                        ready=False, detail=f"{self._key}: GET /models: HTTP {response.status}"
                    )
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            return BackendHealth(ready=False, detail=f"{self._key}: {type(error).__name__}: {error}")
        try:
            listed = {entry["id"] for entry in json.loads(body)["data"]}
        except (ValueError, KeyError, TypeError):
            return BackendHealth(ready=False, detail=f"{self._key}: GET /models: not a model list")
        if self.model not in listed:
            return BackendHealth(ready=False, detail=f"{self._key}: {self.model!r} is not listed")
        return BackendHealth(ready=True)

    async def close(self) -> None:
        """Nothing to release: the shared HTTP session is closed by its owner."""


def _text(data: bytes) -> str:
    """The start of a body or line, for a log line."""
    return data[:_DETAIL_BYTES].decode("utf-8", errors="replace")

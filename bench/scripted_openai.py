"""scripted-openai: a benchmark double of an OpenAI-compatible model server.

It stands where vLLM or a hosted provider would, so that the router bench can measure what
a proxy in front of an OpenAI-compatible server adds (Parley's "openai" backend kind,
LiteLLM's proxy) without a model's own cost in the numbers. It is not a model: it answers
exactly as the Triton model parley-scripted does (the same code: `scripted_reply.py` from
model_repo/parley-scripted), with the same script:

- `ttft_ms`, `tokens_per_second`, `reply_tokens`, `fail_after_tokens`: the server's
  defaults (command line), overridden by fields of the request body of the same names (a
  catalog backend's `parameters` arrive so), overridden by `[scripted key=value ...]`
  directives in the last user message (these pass through any proxy untouched).
- Token i is due at arrival + ttft + i / tokens_per_second, kept against the clock; 0 sends
  as fast as the connection takes them.
- Deterministic: the same request gives the same tokens (whitespace-separated words).

API: `POST /v1/chat/completions` (streaming SSE chunks, `stream_options.include_usage`
adds the usage chunk before `[DONE]`; non-streaming returns one completion), `GET
/v1/models`; for the bench, `GET /stats` (open streams, tokens sent) and `POST /reset`
(ends every open stream: a clean slate between measuring windows). A client that
disconnects cancels its stream at once, as a real server frees the sequence.

One process, one event loop (uvloop). The bench measures this server's own throughput
straight from its client and reports it beside the proxies' numbers, so a reader can see
that the double is not the limit.

Run alone: `.venv/bin/python -m bench.scripted_openai --port 8011 --model scripted`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from aiohttp import web

from parley_stack.servers.base import ProcessSpec, http_ok

_REPO = Path(__file__).resolve().parent.parent
_SCRIPTED_REPLY = _REPO / "model_repo" / "parley-scripted" / "1" / "scripted_reply.py"


def _load_scripted_reply() -> ModuleType:
    """parley-scripted's reply logic, loaded by path (its folder is a Triton model, not a package)."""
    spec = importlib.util.spec_from_file_location("parley_scripted_reply", _SCRIPTED_REPLY)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


_reply = _load_scripted_reply()

#: parley-scripted's limits (its config.pbtxt), so both doubles refuse and cut alike.
CONTEXT_WINDOW = 2048
MAX_OUTPUT_TOKENS = 1024
DEFAULT_MAX_TOKENS = 256


@dataclass
class _Stats:
    requests: int = 0
    open_streams: int = 0
    tokens_sent: int = 0


def _error(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    body = {"error": {"message": f"scripted-openai: {message}", "type": kind, "code": None}}
    return web.json_response(body, status=status)


class ScriptedOpenAI:
    def __init__(self, model: str, defaults: Any) -> None:
        self.model = model
        self.defaults = defaults
        self.stats = _Stats()
        self._streams: set[asyncio.Task[Any]] = set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/stats", self.stats_json)
        app.router.add_post("/reset", self.reset)
        return app

    async def models(self, request: web.Request) -> web.Response:
        entry = {"id": self.model, "object": "model", "created": 0, "owned_by": "parley-bench"}
        return web.json_response({"object": "list", "data": [entry]})

    async def stats_json(self, request: web.Request) -> web.Response:
        return web.json_response(vars(self.stats))

    async def reset(self, request: web.Request) -> web.Response:
        """End every open stream (the bench's clean slate between windows); how many there were."""
        streams = list(self._streams)
        for task in streams:
            task.cancel()
        return web.json_response({"ended": len(streams)})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        arrival = time.monotonic()
        self.stats.requests += 1
        try:
            body = await request.json()
            messages = body["messages"]
            turns = [_reply.Turn(m["role"], _content(m["content"])) for m in messages]
        except (ValueError, KeyError, TypeError) as error:
            return _error(400, f"a chat completion request needs messages: {error}")
        try:
            script = self.defaults.updated(body, source="request field", strict=False)
            script = _reply.script_for(turns, script)
            asked = body.get("max_completion_tokens") or body.get("max_tokens")
            max_tokens = int(asked or DEFAULT_MAX_TOKENS)
            if not 1 <= max_tokens <= MAX_OUTPUT_TOKENS:
                raise _reply.ScriptError(f"max_tokens must be 1 to {MAX_OUTPUT_TOKENS}, got {max_tokens}")
            prompt_tokens = len(_reply.tokenize(_reply.chatml(turns)))
            if prompt_tokens + max_tokens > CONTEXT_WINDOW:
                raise _reply.ScriptError(
                    f"{prompt_tokens} prompt tokens and max_tokens {max_tokens} exceed {CONTEXT_WINDOW}"
                )
        except (_reply.ScriptError, ValueError) as error:
            return _error(400, str(error))
        reply = _reply.plan(turns, script, max_tokens)
        model = str(body.get("model") or self.model)
        ident = f"chatcmpl-scripted-{self.stats.requests}"
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(reply.tokens),
            "total_tokens": prompt_tokens + len(reply.tokens),
        }
        if not body.get("stream"):
            return await self._whole(arrival, script, reply, model, ident, usage)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self._stream(request, arrival, script, reply, model, ident, usage, include_usage)

    async def _whole(
        self, arrival: float, script: Any, reply: Any, model: str, ident: str, usage: dict[str, int]
    ) -> web.Response:
        count = len(reply.tokens)
        if script.fail_after_tokens != -1 and script.fail_after_tokens <= count:
            count = script.fail_after_tokens
        pace = script.tokens_per_second
        finish = arrival + script.ttft_ms / 1000 + (max(count - 1, 0) / pace if pace else 0)
        await asyncio.sleep(max(0.0, finish - time.monotonic()))
        if count < len(reply.tokens) and script.fail_after_tokens != -1:
            return _error(503, f"scripted failure after {count} tokens", "server_error")
        text = "".join(reply.piece(i) for i in range(count))
        self.stats.tokens_sent += count
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": reply.finish_reason,
        }
        return web.json_response(
            {"id": ident, "object": "chat.completion", "created": int(time.time()), "model": model,
             "choices": [choice], "usage": usage}
        )  # fmt: skip

    async def _stream(
        self,
        request: web.Request,
        arrival: float,
        script: Any,
        reply: Any,
        model: str,
        ident: str,
        usage: dict[str, int],
        include_usage: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        # Every chunk but the content is the same: the prefix and suffix are made once.
        usage_null = ',"usage":null' if include_usage else ""
        head = (
            f'data: {{"id":"{ident}","object":"chat.completion.chunk","created":{int(time.time())},'
            f'"model":{json.dumps(model)}'
        )
        self.stats.open_streams += 1
        handler = asyncio.current_task()
        if handler is not None:
            self._streams.add(handler)
        sent = 0
        try:
            ttft = arrival + script.ttft_ms / 1000
            pace = script.tokens_per_second
            for index in range(len(reply.tokens)):
                due = ttft + (index / pace if pace else 0)
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif index % 16 == 0:
                    await asyncio.sleep(0)  # unpaced: let other streams and the loop run
                if index == script.fail_after_tokens:
                    break
                role = '"role":"assistant",' if index == 0 else ""
                content = json.dumps(reply.piece(index))
                await response.write(
                    f'{head},"choices":[{{"index":0,"delta":{{{role}"content":{content}}},'
                    f'"finish_reason":null}}]{usage_null}}}\n\n'.encode()
                )
                sent += 1
            else:
                if script.fail_after_tokens == len(reply.tokens):
                    raise _ScriptedFailureError
                finish = json.dumps(reply.finish_reason)
                done = f'{head},"choices":[{{"index":0,"delta":{{}},"finish_reason":{finish}}}]'
                await response.write(f"{done}{usage_null}}}\n\n".encode())
                if include_usage:
                    await response.write(f'{head},"choices":[],"usage":{json.dumps(usage)}}}\n\n'.encode())
                await response.write(b"data: [DONE]\n\n")
                await response.write_eof()
                return response
            raise _ScriptedFailureError
        except _ScriptedFailureError:
            # Mid-stream: an OpenAI server can only say so in the stream, then close it.
            error = {"error": {"message": f"scripted-openai: scripted failure after {sent} tokens",
                               "type": "server_error"}}  # fmt: skip
            await response.write(f"data: {json.dumps(error)}\n\n".encode())
            await response.write_eof()
            return response
        finally:
            if handler is not None:
                self._streams.discard(handler)
            self.stats.open_streams -= 1
            self.stats.tokens_sent += sent


class _ScriptedFailureError(Exception):
    pass


def _content(content: object) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    raise TypeError("content must be a string or a list of parts")


async def serve(host: str, port: int, model: str, defaults: Any) -> None:
    runner = web.AppRunner(
        ScriptedOpenAI(model, defaults).app(),
        access_log=None,
        # A client that goes away cancels its handler, even during a long first-token wait.
        handler_cancellation=True,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096, reuse_port=True)
    await site.start()
    print(f"scripted-openai: serving {model!r} on http://{host}:{port}/v1", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def scripted_openai_spec(name: str, host: str, port: int, model: str) -> ProcessSpec:
    """The double as a process of the local stack (its pid table stops it with the stack)."""
    return ProcessSpec(
        name=name,
        argv=[
            sys.executable,
            "-m",
            "bench.scripted_openai",
            "--host",
            host,
            "--port",
            str(port),
            "--model",
            model,
        ],
        ready=lambda: http_ok(f"http://{host}:{port}/stats"),
        env={"PYTHONUNBUFFERED": "1"},
        cwd=_REPO,
        endpoints={"http": f"{host}:{port}"},
        ready_timeout_s=30,
        stop_timeout_s=5,
    )


def backend_stats(host: str, port: int) -> dict[str, int]:
    """The double's counters: requests, open_streams, tokens_sent."""
    with urllib.request.urlopen(f"http://{host}:{port}/stats", timeout=5) as reply:
        found: dict[str, int] = json.loads(reply.read())
        return found


def backend_reset(host: str, port: int) -> int:
    """End every stream the double holds open; how many there were."""
    request = urllib.request.Request(f"http://{host}:{port}/reset", method="POST")
    with urllib.request.urlopen(request, timeout=5) as reply:
        return int(json.loads(reply.read())["ended"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--model", default="scripted")
    parser.add_argument("--ttft-ms", type=int, default=20)
    parser.add_argument("--tokens-per-second", type=float, default=100.0)
    parser.add_argument("--reply-tokens", type=int, default=0)
    args = parser.parse_args()
    defaults = _reply.Script(
        ttft_ms=args.ttft_ms, tokens_per_second=args.tokens_per_second, reply_tokens=args.reply_tokens
    )
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port, args.model, defaults))
    else:
        uvloop.run(serve(args.host, args.port, args.model, defaults))


if __name__ == "__main__":
    main()

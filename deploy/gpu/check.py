"""Check a GPU model on Triton's vLLM backend: load it, stream an answer, cancel one, read the usage.

Run it on (or next to) the GPU machine, against a Triton started from the vLLM container with
deploy/gpu/model_repo (docs/adr/0012-gpu-model.md):

    python deploy/gpu/check.py --url 127.0.0.1:8001 --model qwen2.5-7b-instruct

It needs only `tritonclient[grpc]` and numpy. It prints one line per check and, for the
answer, the time to first token and the tokens per second; it exits 1 if a check failed.

1. The server is live and the model is ready (loaded through the repository API if the
   server runs with --model-control-mode explicit and it is not).
2. A streamed answer: more than one response, a finish reason, num_input_tokens > 0, and
   num_output_tokens that add up to at most max_tokens.
3. Cancel: a long answer is cancelled after a few responses; the stream ends at once, and a
   request sent right after is answered (the engine dropped the cancelled one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc.aio import InferenceServerClient

#: What the check asks; the answer is long enough to time, short enough to wait for.
QUESTION = "Explain in three short paragraphs how a lighthouse lens focuses light."
SYSTEM = "You are a helpful assistant."
_OUTPUTS = ("text_output", "finish_reason", "num_input_tokens", "num_output_tokens")


@dataclass(frozen=True)
class Options:
    url: str
    model: str
    max_tokens: int
    cancel_after: int
    timeout_s: float
    question: str


def parse_args(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default="127.0.0.1:8001", help="Triton's gRPC address (host:port)")
    parser.add_argument("--model", default="qwen2.5-7b-instruct", help="the Triton model to check")
    parser.add_argument("--max-tokens", type=int, default=256, help="the streamed answer's limit")
    parser.add_argument(
        "--cancel-after", type=int, default=5, help="responses to read before cancelling the long answer"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for loading and each answer")
    parser.add_argument("--question", default=QUESTION)
    args = parser.parse_args(argv)
    if args.max_tokens < 1 or args.cancel_after < 1 or args.timeout <= 0:
        parser.error("--max-tokens and --cancel-after must be at least 1, --timeout positive")
    return Options(args.url, args.model, args.max_tokens, args.cancel_after, args.timeout, args.question)


def chatml(messages: Sequence[tuple[str, str]]) -> str:
    """The conversation as Qwen2.5's template renders it, ready for the answer."""
    turns = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in messages)
    return turns + "<|im_start|>assistant\n"


def _bool_input(name: str, value: bool) -> InferInput:
    tensor = InferInput(name, [1], "BOOL")
    tensor.set_data_from_numpy(np.array([value], dtype=bool))
    return tensor


def build_request(model: str, question: str, max_tokens: int, request_id: str) -> dict[str, Any]:
    """One streamed, greedy generation with the usage outputs switched on."""
    prompt = InferInput("text_input", [1], "BYTES")
    prompt.set_data_from_numpy(
        np.array([chatml([("system", SYSTEM), ("user", question)]).encode()], dtype=np.object_)
    )
    sampling = InferInput("sampling_parameters", [1], "BYTES")
    parameters = {"max_tokens": max_tokens, "temperature": 0.0}
    sampling.set_data_from_numpy(np.array([json.dumps(parameters).encode()], dtype=np.object_))
    return {
        "model_name": model,
        "inputs": [
            prompt,
            _bool_input("stream", True),
            sampling,
            _bool_input("exclude_input_in_output", True),
            _bool_input("return_finish_reason", True),
            _bool_input("return_num_input_tokens", True),
            _bool_input("return_num_output_tokens", True),
        ],
        "outputs": [InferRequestedOutput(name) for name in _OUTPUTS],
        "request_id": request_id,
    }


@dataclass
class Answer:
    pieces: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str = ""
    first_token_s: float = 0.0
    elapsed_s: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        decoding = self.elapsed_s - self.first_token_s
        return (self.output_tokens - 1) / decoding if self.output_tokens > 1 and decoding > 0 else 0.0


def _first(result: Any, name: str) -> Any:
    value = result.as_numpy(name)
    return None if value is None or value.size == 0 else value.reshape(-1)[0]


async def _one(request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    yield request


async def stream(client: InferenceServerClient, request: dict[str, Any], *, stop_after: int = 0) -> Answer:
    """Reads a streamed answer; with stop_after, cancels the stream after that many responses."""
    answer = Answer()
    started = time.monotonic()
    responses = client.stream_infer(_one(request))
    async for result, error in responses:
        if error is not None:
            raise RuntimeError(f"the stream failed: {error}")
        text = _first(result, "text_output")
        if text:
            if not answer.pieces:
                answer.first_token_s = time.monotonic() - started
            answer.pieces.append(text.decode("utf-8", errors="replace"))
        answer.input_tokens = int(_first(result, "num_input_tokens") or answer.input_tokens)
        answer.output_tokens += int(_first(result, "num_output_tokens") or 0)
        reason = _first(result, "finish_reason")
        if reason:
            answer.finish_reason = reason.decode()
        if stop_after and len(answer.pieces) >= stop_after:
            responses.cancel()
            break
        if answer.finish_reason:
            break
    answer.elapsed_s = time.monotonic() - started
    return answer


async def run(options: Options) -> list[tuple[str, bool, str]]:
    """Every check, in order: (name, passed, what was seen)."""
    checks: list[tuple[str, bool, str]] = []
    client = InferenceServerClient(options.url)
    try:
        live = await client.is_server_live()
        checks.append(("server live", bool(live), options.url))
        if not await client.is_model_ready(options.model):
            await client.load_model(options.model, client_timeout=options.timeout_s)
        checks.append(("model ready", bool(await client.is_model_ready(options.model)), options.model))

        request = build_request(options.model, options.question, options.max_tokens, f"check-{uuid.uuid4()}")
        answer = await asyncio.wait_for(stream(client, request), options.timeout_s)
        checks.append(("streamed", len(answer.pieces) > 1, f"{len(answer.pieces)} responses"))
        checks.append(("finish reason", answer.finish_reason in ("stop", "length"), answer.finish_reason))
        checks.append(("prompt tokens", answer.input_tokens > 0, str(answer.input_tokens)))
        checks.append(
            (
                "completion tokens",
                0 < answer.output_tokens <= options.max_tokens,
                f"{answer.output_tokens} (max_tokens {options.max_tokens})",
            )
        )
        checks.append(
            (
                "speed",
                True,
                f"TTFT {1000 * answer.first_token_s:.0f} ms, {answer.tokens_per_second:.1f} tokens/s, "
                f"{answer.elapsed_s:.2f} s in all",
            )
        )

        long = build_request(options.model, options.question, 4096, f"check-cancel-{uuid.uuid4()}")
        started = time.monotonic()
        cancelled = await asyncio.wait_for(
            stream(client, long, stop_after=options.cancel_after), options.timeout_s
        )
        checks.append(
            (
                "cancel",
                not cancelled.finish_reason and len(cancelled.pieces) == options.cancel_after,
                f"stopped after {len(cancelled.pieces)} responses, {time.monotonic() - started:.2f} s",
            )
        )
        after = build_request(options.model, "Say hi.", 8, f"check-after-{uuid.uuid4()}")
        next_answer = await asyncio.wait_for(stream(client, after), options.timeout_s)
        checks.append(
            (
                "served after cancel",
                bool(next_answer.finish_reason),
                f"TTFT {1000 * next_answer.first_token_s:.0f} ms",
            )
        )
    finally:
        await client.close()
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    checks = asyncio.run(run(options))
    for name, passed, seen in checks:
        print(f"{'ok  ' if passed else 'FAIL'} {name}: {seen}")
    return 0 if all(passed for _, passed, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())

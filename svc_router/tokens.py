"""A turn's context in the model's own tokens, so that it can be trimmed to the model's window.

Each catalog model names its tokenizer (`parley_core.catalog`, docs/adr/0010-model-catalog.md):
counted here from the text (`words`, `words-and-punctuation`, the `bytes` upper bound), or by
a Triton model that knows the model's vocabulary and chat template (`smollm2-tokens`).
Either way a count is a `TokenCounts`: each message's own tokens, which do not depend on the
messages around it, and an overhead once per conversation (the generation prompt, a default
system message), which depends only on whether the conversation starts with a system
message. Dropping messages from a context therefore never changes the other messages' counts.

A conversation grows by two messages a turn and its old messages never change, so the Triton
counter keeps every message's count in an in-process LRU cache keyed by (counting model, role,
SHA-256 of the content): a long conversation's old messages are sent to Triton once per
process. Any failure to count is a `TokenCountError` (the engine answers UNAVAILABLE).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from parley_core.catalog import BytesTokenizer, CatalogModel, TextTokenizer, TritonTokenizer
from parley_core.tracing import inject_headers
from svc_router.backends._base import ChatMessage

__all__ = [
    "CatalogTokenCounter",
    "TextTokenCounter",
    "TokenCountError",
    "TokenCounter",
    "TokenCounts",
    "TritonTokenCounter",
    "chatml_turn",
]

#: What a ChatML prompt ends with: the turn the model is asked to write.
GENERATION_PROMPT = "<|im_start|>assistant\n"
# parley-tiny's tokens (model_repo/parley-tiny/1/tiny_lm.py): words and single punctuation marks.
_WORD_OR_MARK = re.compile(r"\w+(?:'\w+)*|[^\w\s]")
#: Messages per request to a counting model, so that no request nears gRPC's 4 MB limit.
_BATCH_BYTES = 1 << 20


@dataclass(frozen=True)
class TokenCounts:
    """A conversation's length in one model's tokens; `total` is the prompt the model will read."""

    #: Each message's own tokens, in the order they were given.
    messages: tuple[int, ...]
    #: Tokens once per conversation: the generation prompt, a default system message.
    overhead: int

    @property
    def total(self) -> int:
        return sum(self.messages) + self.overhead


class TokenCountError(Exception):
    """The model's tokens could not be counted (its counter is unreachable or failed).

    `message` is safe to show to the user; `detail` is for the log.
    """

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class TokenCounter(Protocol):
    """Counts messages as one catalog model counts them."""

    async def count(
        self, model: CatalogModel, messages: Sequence[ChatMessage], *, timeout_s: float | None = None
    ) -> TokenCounts:
        """`messages` in `model`'s tokens; `timeout_s` bounds any call it makes (None: no bound)."""
        ...


def chatml_turn(message: ChatMessage) -> str:
    """A message as the ChatML turn it is sent as (what parley-scripted and parley-tiny count)."""
    return f"<|im_start|>{message.role}\n{message.content}<|im_end|>\n"


def _measure(kind: str, text: str) -> int:
    if kind == "words":
        return len(text.split())
    if kind == "words-and-punctuation":
        return len(_WORD_OR_MARK.findall(text))
    return len(text.encode("utf-8"))


#: What a model may add to a conversation beyond its messages (a default system message:
#: SmolLM2's is 25 tokens), for `upper_bound`.
_UPPER_BOUND_OVERHEAD = 256


def upper_bound(messages: Sequence[ChatMessage]) -> TokenCounts:
    """Counts no real tokenizer exceeds: every token is at least one byte of the ChatML text.

    For when a model's own counter is unreachable: a turn then trims too early, rather than
    failing while a backend could answer.
    """
    counted = tuple(len(chatml_turn(message).encode("utf-8")) for message in messages)
    return TokenCounts(counted, len(GENERATION_PROMPT.encode("utf-8")) + _UPPER_BOUND_OVERHEAD)


class TextTokenCounter:
    """Counts from the text: for `words`, `words-and-punctuation` and `bytes` tokenizers."""

    async def count(
        self, model: CatalogModel, messages: Sequence[ChatMessage], *, timeout_s: float | None = None
    ) -> TokenCounts:
        return self.count_now(model, messages)

    @staticmethod
    def count_now(model: CatalogModel, messages: Sequence[ChatMessage]) -> TokenCounts:
        """The same count, without awaiting: it is plain arithmetic on the text."""
        tokenizer = model.tokenizer
        if not isinstance(tokenizer, TextTokenizer | BytesTokenizer):
            raise TypeError(f"{model.name} is counted by {tokenizer.kind!r}, not from its text")
        chatml = isinstance(tokenizer, BytesTokenizer) or tokenizer.template == "chatml"
        counted = tuple(
            _measure(tokenizer.kind, chatml_turn(message) if chatml else message.content)
            + tokenizer.message_overhead
            for message in messages
        )
        overhead = (_measure(tokenizer.kind, GENERATION_PROMPT) if chatml else 0) + tokenizer.prompt_overhead
        return TokenCounts(counted, overhead)


_Key = tuple[str, str, bytes]


class TritonTokenCounter:
    """Counts with a Triton counting model (`tokenizer = {kind = "triton", model = ...}`).

    Uses the one `tritonclient.grpc.aio` client it is given (the engine's; it closes it);
    unary `infer` requests, each bounded by `timeout_s`.
    """

    def __init__(self, client: InferenceServerClient, *, cache_size: int = 100_000) -> None:
        self._client = client
        self._cache_size = cache_size
        #: (counting model, role, SHA-256 of the content) -> the message's tokens, oldest use first.
        self._messages: OrderedDict[_Key, int] = OrderedDict()
        #: (counting model, whether the first message is a system message) -> the overhead.
        self._overheads: dict[tuple[str, bool], int] = {}

    async def count(
        self, model: CatalogModel, messages: Sequence[ChatMessage], *, timeout_s: float | None = None
    ) -> TokenCounts:
        tokenizer = model.tokenizer
        if not isinstance(tokenizer, TritonTokenizer):
            raise TypeError(f"{model.name} is counted by {tokenizer.kind!r}, not by a Triton model")
        if not messages:
            raise ValueError("a context has at least one message")
        counter = tokenizer.model
        keys = [_key(counter, message) for message in messages]
        shape = (counter, messages[0].role == "system")
        # What the cache holds now: another count may evict entries while this one awaits.
        known = {key: self._messages[key] for key in keys if key in self._messages}
        missing = {key: message for key, message in zip(keys, messages, strict=True) if key not in known}
        overhead = self._overheads.get(shape)
        if missing or overhead is None:
            # The overhead of what is sent is the conversation's only if it starts alike.
            first = (keys[0], messages[0])
            to_send = [first, *((k, m) for k, m in missing.items() if k != keys[0])]
            overhead = await self._fetch(counter, to_send, known, timeout_s)
            self._overheads[shape] = overhead
        counted = []
        for key in keys:
            tokens = known[key]
            self._messages[key] = tokens
            self._messages.move_to_end(key)
            counted.append(tokens)
        while len(self._messages) > self._cache_size:
            self._messages.popitem(last=False)
        return TokenCounts(tuple(counted), overhead)

    async def _fetch(
        self,
        counter: str,
        to_send: list[tuple[_Key, ChatMessage]],
        known: dict[_Key, int],
        timeout_s: float | None,
    ) -> int:
        """Counts `to_send` into `known`; the overhead of a conversation that starts as it does."""
        overhead = 0
        for start, batch in enumerate(_batches(to_send)):
            counts, batch_overhead = await self._infer(counter, [message for _, message in batch], timeout_s)
            if start == 0:
                overhead = batch_overhead
            known.update((key, tokens) for (key, _), tokens in zip(batch, counts, strict=True))
        return overhead

    async def _infer(
        self, counter: str, messages: list[ChatMessage], timeout_s: float | None
    ) -> tuple[list[int], int]:
        payload = json.dumps([{"role": m.role, "content": m.content} for m in messages]).encode("utf-8")
        tensor = InferInput("messages", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([payload], dtype=np.object_))
        outputs = [InferRequestedOutput("message_tokens"), InferRequestedOutput("overhead_tokens")]
        try:
            # headers: Triton's spans of the request join the turn's trace.
            result = await self._client.infer(
                counter,
                [tensor],
                outputs=outputs,
                client_timeout=timeout_s,
                headers=inject_headers(),
            )
        except InferenceServerException as error:
            raise TokenCountError(
                "the model's token counter is unavailable",
                detail=f"{counter}: {error.status()} {error.message()}",
            ) from None
        message_tokens = result.as_numpy("message_tokens")
        overhead_tokens = result.as_numpy("overhead_tokens")
        if message_tokens is None or overhead_tokens is None or len(message_tokens) != len(messages):
            raise TokenCountError(
                "the model's token counter is unavailable",
                detail=f"{counter}: {len(messages)} messages sent, answer {message_tokens!r}",
            )
        return [int(tokens) for tokens in message_tokens], int(overhead_tokens.reshape(-1)[0])


def _key(counter: str, message: ChatMessage) -> _Key:
    return (counter, message.role, hashlib.sha256(message.content.encode("utf-8")).digest())


def _batches(to_send: list[tuple[_Key, ChatMessage]]) -> list[list[tuple[_Key, ChatMessage]]]:
    """Consecutive batches of about _BATCH_BYTES of content each; the first message stays first."""
    batches: list[list[tuple[_Key, ChatMessage]]] = [[]]
    size = 0
    for item in to_send:
        length = len(item[1].content.encode("utf-8"))
        if batches[-1] and size + length > _BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(item)
        size += length
    return batches


class CatalogTokenCounter:
    """The counter each model's catalog entry names: from the text, or by a Triton model."""

    def __init__(self, triton: TritonTokenCounter) -> None:
        self._text = TextTokenCounter()
        self._triton = triton

    async def count(
        self, model: CatalogModel, messages: Sequence[ChatMessage], *, timeout_s: float | None = None
    ) -> TokenCounts:
        if isinstance(model.tokenizer, TritonTokenizer):
            return await self._triton.count(model, messages, timeout_s=timeout_s)
        return TextTokenCounter.count_now(model, messages)

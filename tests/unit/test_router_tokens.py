"""svc_router.tokens, counting from the text: the sums are what parley-scripted and parley-tiny count.

Both models' own tokenizers are imported from model_repo/ (stdlib-only modules), so these
tests compare with the code that produces the models' prompt_tokens, with no server.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from parley_core.catalog import BytesTokenizer, CatalogModel, load_catalog
from svc_router.backends._base import ChatMessage
from svc_router.tokens import TextTokenCounter, TokenCounts

MODEL_REPO = Path(__file__).resolve().parents[2] / "model_repo"
CATALOG = load_catalog(MODEL_REPO / "catalog.toml")


def _module(path: Path) -> ModuleType:
    name = f"_model_repo_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


SCRIPTED = _module(MODEL_REPO / "parley-scripted" / "1" / "scripted_reply.py")
TINY = _module(MODEL_REPO / "parley-tiny" / "1" / "tiny_lm.py")

CONVERSATIONS = [
    [ChatMessage("user", "hello")],
    [ChatMessage("system", "Be brief."), ChatMessage("user", "What is a lighthouse?")],
    [
        ChatMessage("system", ""),
        ChatMessage("user", "  spaces\tand\nnew lines  "),
        ChatMessage("assistant", "It's a tower, isn't it? (with a lamp)"),
        ChatMessage("user", "Who keeps it... [scripted ttft_ms=5]"),
    ],
    [ChatMessage("assistant", "Hi!"), ChatMessage("user", "naïve café, 日本語; ok?")],
]


def _with(model: CatalogModel, **tokenizer: object) -> CatalogModel:
    return model.model_copy(update={"tokenizer": type(model.tokenizer).model_validate(tokenizer)})


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_words_add_up_to_what_parley_scripted_counts(messages: list[ChatMessage]) -> None:
    counts = TextTokenCounter.count_now(CATALOG.model("parley-scripted"), messages)

    turns = [SCRIPTED.Turn(message.role, message.content) for message in messages]
    assert counts.total == len(SCRIPTED.tokenize(SCRIPTED.chatml(turns)))


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_words_and_punctuation_add_up_to_what_parley_tiny_counts(messages: list[ChatMessage]) -> None:
    counts = TextTokenCounter.count_now(CATALOG.model("parley-tiny"), messages)

    turns = [SCRIPTED.Turn(message.role, message.content) for message in messages]
    assert counts.total == len(TINY.tokenize(SCRIPTED.chatml(turns)))


def test_each_message_counts_its_chatml_turn_and_the_generation_prompt_counts_once() -> None:
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "one two three")]

    counts = TextTokenCounter.count_now(CATALOG.model("parley-scripted"), messages)

    # "<|im_start|>system", "Be", "brief.<|im_end|>" / "<|im_start|>user", ..., "three<|im_end|>"
    assert counts == TokenCounts(messages=(3, 4), overhead=1)


def test_without_a_template_only_the_content_and_the_overheads_count() -> None:
    model = _with(
        CATALOG.model("parley-scripted"),
        kind="words",
        template="none",
        message_overhead=4,
        prompt_overhead=7,
    )

    counts = TextTokenCounter.count_now(model, [ChatMessage("user", "one two"), ChatMessage("user", "")])

    assert counts == TokenCounts(messages=(6, 4), overhead=7)


def test_bytes_count_the_utf8_of_the_chatml_turns() -> None:
    model = CATALOG.model("parley-tiny").model_copy(update={"tokenizer": BytesTokenizer(kind="bytes")})

    counts = TextTokenCounter.count_now(model, [ChatMessage("user", "é")])

    # "é" is two bytes; "<|im_start|>assistant\n" is 22.
    assert counts == TokenCounts(messages=(len("<|im_start|>user\n<|im_end|>\n") + 2,), overhead=22)


async def test_a_model_counted_by_triton_is_not_counted_from_its_text() -> None:
    with pytest.raises(TypeError, match="smollm2 is counted by 'triton'"):
        await TextTokenCounter().count(CATALOG.model("smollm2"), [ChatMessage("user", "hi")])

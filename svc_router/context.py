"""A turn's context: the system prompt and as much of the conversation as the model's window holds.

Plain Python over token counts the model itself would report (`svc_router.tokens`). The
answer's room is reserved first: the prompt may use `context_window - max_output_tokens`, so a
turn can always be answered at full length, except when the newest user message alone needs
more, in which case the answer gets what the window leaves (at least `min_answer_tokens`).

What is kept, newest first:
- the system prompt, always;
- the newest message (the user message being answered), always; if it cannot fit even with
  the shortest answer, `ContextTooLongError` (the engine answers INVALID_ARGUMENT: the
  message alone is too long for the model);
- then whole exchanges, newest first: a user message with the answers that follow it. An
  answer is never kept without the question it answers (a model reading an answer to nothing
  tends to continue it), and an exchange is never split. The first exchange that does not fit
  ends the context: an older, shorter one is not kept after a gap, so the model always reads
  a contiguous stretch of the conversation that ends with the newest message.
Messages before the conversation's first user message (a greeting) form an exchange of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from svc_router.backends._base import ChatMessage
from svc_router.tokens import TokenCounts

__all__ = ["Context", "ContextTooLongError", "assemble"]


@dataclass(frozen=True)
class Context:
    """What the model is asked: `messages` (system prompt first), and for how many tokens."""

    #: The system prompt (if any), then the kept messages of the path, oldest first.
    messages: tuple[ChatMessage, ...]
    #: How many of the path's oldest messages were left out.
    dropped: int
    #: The prompt in the model's tokens: the kept messages plus the template's overhead.
    prompt_tokens: int
    #: The answer's limit to request: at most max_output_tokens, at most what the window leaves.
    max_tokens: int


class ContextTooLongError(ValueError):
    """The newest message, with the system prompt, leaves no room for an answer in the window."""

    def __init__(self, *, needed_tokens: int, context_window: int, min_answer_tokens: int) -> None:
        super().__init__(
            f"the message is too long for the model: with the system prompt it needs "
            f"{needed_tokens} tokens, and the model's context window of {context_window} tokens "
            f"must also hold at least {min_answer_tokens} of the answer"
        )
        self.needed_tokens = needed_tokens
        self.context_window = context_window
        self.min_answer_tokens = min_answer_tokens


def assemble(
    system_prompt: ChatMessage | None,
    path: Sequence[ChatMessage],
    counts: TokenCounts,
    context_window: int,
    max_output_tokens: int,
    *,
    min_answer_tokens: int = 1,
) -> Context:
    """The context of a turn.

    `path` is the conversation's active branch, oldest first, ending with the user message to
    answer. `counts` counts the system prompt (when there is one) followed by `path`, in the
    model's tokens. `max_output_tokens` is the most the answer may have (the model's limit,
    or less if the turn asked for less).
    """
    if not path or path[-1].role != "user":
        raise ValueError("the path must end with the user message to answer")
    if system_prompt is not None and system_prompt.role != "system":
        raise ValueError(f"the system prompt has role {system_prompt.role!r}")
    if not 1 <= min_answer_tokens <= max_output_tokens <= context_window:
        raise ValueError(
            f"need 1 <= min_answer_tokens ({min_answer_tokens}) <= max_output_tokens "
            f"({max_output_tokens}) <= context_window ({context_window})"
        )
    leading = 0 if system_prompt is None else 1
    if len(counts.messages) != leading + len(path):
        raise ValueError(f"{len(counts.messages)} counts for {leading + len(path)} messages")
    path_counts = counts.messages[leading:]

    needed = counts.overhead + sum(counts.messages[:leading]) + path_counts[-1]
    if needed + min_answer_tokens > context_window:
        raise ContextTooLongError(
            needed_tokens=needed, context_window=context_window, min_answer_tokens=min_answer_tokens
        )
    budget = context_window - max_output_tokens
    prompt_tokens = needed
    first_kept = len(path) - 1
    for start, end in reversed(_exchanges(path[:-1])):
        size = sum(path_counts[start:end])
        if prompt_tokens + size > budget:
            break
        prompt_tokens += size
        first_kept = start
    kept = tuple(path[first_kept:])
    return Context(
        messages=((system_prompt,) if system_prompt is not None else ()) + kept,
        dropped=first_kept,
        prompt_tokens=prompt_tokens,
        max_tokens=min(max_output_tokens, context_window - prompt_tokens),
    )


def _exchanges(messages: Sequence[ChatMessage]) -> list[tuple[int, int]]:
    """[start, end) of each exchange, oldest first: a user message and what follows it up to the
    next user message; what comes before the first user message is an exchange of its own."""
    starts = [index for index, message in enumerate(messages) if message.role == "user"]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    if not messages:
        return []
    return list(zip(starts, [*starts[1:], len(messages)], strict=True))

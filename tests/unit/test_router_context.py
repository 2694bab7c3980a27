"""svc_router.context.assemble: what a turn's context keeps and drops, and the answer's limit."""

from __future__ import annotations

import pytest

from svc_router.backends._base import ChatMessage
from svc_router.context import Context, ContextTooLongError, assemble
from svc_router.tokens import TokenCounts

SYSTEM = ChatMessage("system", "Be brief.")


def _user(text: str) -> ChatMessage:
    return ChatMessage("user", text)


def _assistant(text: str) -> ChatMessage:
    return ChatMessage("assistant", text)


# Three exchanges and the question to answer; each message counts 10 tokens, the system prompt 5.
PATH = (
    _user("q1"),
    _assistant("a1"),
    _user("q2"),
    _assistant("a2"),
    _user("q3"),
    _assistant("a3"),
    _user("q4"),
)
COUNTS = TokenCounts(messages=(5, *(10,) * len(PATH)), overhead=3)


def test_everything_is_kept_when_it_fits() -> None:
    context = assemble(SYSTEM, PATH, COUNTS, context_window=200, max_output_tokens=50)

    assert context == Context(messages=(SYSTEM, *PATH), dropped=0, prompt_tokens=78, max_tokens=50)


def test_the_oldest_exchanges_are_dropped_whole() -> None:
    # Budget 100 - 40 = 60: system 5 + overhead 3 + q4 10 = 18, then two exchanges of 20 = 58.
    context = assemble(SYSTEM, PATH, COUNTS, context_window=100, max_output_tokens=40)

    assert context.messages == (SYSTEM, *PATH[2:])
    assert context.dropped == 2
    assert context.prompt_tokens == 58
    assert context.max_tokens == 40


def test_an_answer_is_not_kept_without_its_question() -> None:
    # Budget 77 - 40 = 37 leaves 19 after the system prompt, the overhead and q4: room for a3
    # alone (10), not for its exchange q3 + a3 (20).
    context = assemble(SYSTEM, PATH, COUNTS, context_window=37 + 40, max_output_tokens=40)

    assert context.messages == (SYSTEM, PATH[-1])
    assert context.dropped == 6


def test_an_exchange_with_several_answers_is_kept_or_dropped_whole() -> None:
    path = (_user("q1"), _assistant("a1"), _assistant("a1 again"), _user("q2"))
    counts = TokenCounts(messages=(10, 10, 10, 10), overhead=0)

    assert assemble(None, path, counts, context_window=50, max_output_tokens=10).dropped == 0
    assert assemble(None, path, counts, context_window=49, max_output_tokens=10).dropped == 3


def test_a_big_old_exchange_ends_the_context_even_if_an_older_one_would_fit() -> None:
    path = (_user("q1"), _assistant("a1"), _user("long"), _assistant("long"), _user("q3"))
    counts = TokenCounts(messages=(1, 1, 100, 100, 1), overhead=0)

    context = assemble(None, path, counts, context_window=110, max_output_tokens=10)

    assert context.messages == (path[-1],)
    assert context.dropped == 4


def test_messages_before_the_first_question_are_an_exchange_of_their_own() -> None:
    path = (_assistant("Hello! Ask me anything."), _user("q1"), _assistant("a1"), _user("q2"))
    counts = TokenCounts(messages=(10, 10, 10, 10), overhead=0)

    assert assemble(None, path, counts, context_window=40, max_output_tokens=10).dropped == 1
    assert assemble(None, path, counts, context_window=50, max_output_tokens=10).dropped == 0


def test_without_a_system_prompt_only_the_path_is_counted() -> None:
    counts = TokenCounts(messages=(10,) * len(PATH), overhead=3)

    context = assemble(None, PATH, counts, context_window=100, max_output_tokens=40)

    assert context.messages == PATH[2:]
    assert context.prompt_tokens == 53


def test_a_long_question_takes_room_from_the_answer() -> None:
    counts = TokenCounts(messages=(5, *(10,) * (len(PATH) - 1), 80), overhead=3)

    context = assemble(SYSTEM, PATH, counts, context_window=100, max_output_tokens=40)

    assert context.messages == (SYSTEM, PATH[-1])
    assert context.prompt_tokens == 88
    assert context.max_tokens == 12


def test_a_question_that_leaves_no_room_for_an_answer_is_refused() -> None:
    counts = TokenCounts(messages=(5, *(10,) * (len(PATH) - 1), 92), overhead=3)

    with pytest.raises(ContextTooLongError) as raised:
        assemble(SYSTEM, PATH, counts, context_window=100, max_output_tokens=40)

    assert raised.value.needed_tokens == 100
    assert str(raised.value) == (
        "the message is too long for the model: with the system prompt it needs 100 tokens, "
        "and the model's context window of 100 tokens must also hold at least 1 of the answer"
    )


def test_the_shortest_answer_can_be_raised() -> None:
    counts = TokenCounts(messages=(5, *(10,) * (len(PATH) - 1), 80), overhead=3)

    with pytest.raises(ContextTooLongError):
        assemble(SYSTEM, PATH, counts, context_window=100, max_output_tokens=40, min_answer_tokens=13)
    assert assemble(SYSTEM, PATH, counts, 100, 40, min_answer_tokens=12).max_tokens == 12


@pytest.mark.parametrize(
    ("system", "path", "counts", "message"),
    [
        (SYSTEM, PATH[:-1], TokenCounts((5, *(10,) * 6), 0), "must end with the user message"),
        (SYSTEM, (), TokenCounts((5,), 0), "must end with the user message"),
        (_user("x"), PATH, COUNTS, "has role 'user'"),
        (SYSTEM, PATH, TokenCounts((10,) * len(PATH), 0), "7 counts for 8 messages"),
    ],
)
def test_inconsistent_input_is_a_programming_error(
    system: ChatMessage, path: tuple[ChatMessage, ...], counts: TokenCounts, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        assemble(system, path, counts, context_window=100, max_output_tokens=10)
    assert not isinstance(raised.value, ContextTooLongError)


def test_limits_that_cannot_hold_an_answer_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="max_output_tokens"):
        assemble(SYSTEM, PATH, COUNTS, context_window=100, max_output_tokens=101)

"""parley-tiny's language model: a word-level, order-2 Markov chain over a small corpus.

It exists so that the whole serving path (Triton, streaming, cancellation, usage) can be
exercised on a laptop CPU with a real generator: the text depends on the prompt, is the
same for the same prompt, and is counted with the same tokenizer as the prompt. It knows
nothing about Triton, so it can be read and tried on its own.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# Words (with an inner apostrophe: "don't") or single punctuation marks; whitespace is dropped.
_TOKEN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = frozenset(".,;:!?)]}%")
_NO_SPACE_AFTER = frozenset("([{")
_SENTENCE_END = frozenset(".!?")

State = tuple[str, str]


def tokenize(text: str) -> list[str]:
    """Split text into the tokens that both the prompt and the completion are counted in."""
    return _TOKEN.findall(text)


def piece(previous: str | None, token: str) -> str:
    """The text a token adds after `previous`: a space before words, none before punctuation."""
    if previous is None or token in _NO_SPACE_BEFORE or previous in _NO_SPACE_AFTER:
        return token
    return " " + token


def _seed(prompt: str) -> int:
    """A seed that is stable across processes (the built-in hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big")


def _key(first: str, second: str) -> State:
    return first.lower(), second.lower()


@dataclass(frozen=True)
class _Successors:
    tokens: tuple[str, ...]
    weights: tuple[int, ...]


class MarkovChain:
    """Next-token counts for every pair of consecutive corpus tokens (case-insensitive keys)."""

    def __init__(self, corpus: str) -> None:
        tokens = tokenize(corpus)
        if len(tokens) < 3:
            raise ValueError("the corpus needs at least three tokens")
        counts: dict[State, dict[str, int]] = {}
        # Wrap around so that every state has a successor and generation never dead-ends.
        ring = [*tokens, tokens[0], tokens[1]]
        for first, second, third in zip(ring, ring[1:], ring[2:], strict=False):
            followers = counts.setdefault(_key(first, second), {})
            followers[third] = followers.get(third, 0) + 1
        self._successors = {
            state: _Successors(tuple(followers), tuple(followers.values()))
            for state, followers in counts.items()
        }
        # Back-off tables, in corpus order so that choices are reproducible.
        self._states_after: dict[str, list[State]] = {}
        for state in self._successors:
            self._states_after.setdefault(state[1], []).append(state)
        self._sentence_starts = [s for s in self._successors if s[0] in _SENTENCE_END]
        # Keys are lower case; a token emitted from a key is spelled as the corpus first did.
        self._spelling: dict[str, str] = {}
        for token in tokens:
            self._spelling.setdefault(token.lower(), token)
        self.corpus_tokens = len(tokens)

    @property
    def states(self) -> int:
        return len(self._successors)

    def _start(self, prompt_tokens: Sequence[str], rng: random.Random) -> tuple[State, list[str]]:
        """The state to continue from, and tokens to emit before the chain takes over.

        The prompt's last two tokens when the corpus has them; else any state that ends in the
        prompt's last token; else a sentence start (whose first word is emitted first).
        """
        if len(prompt_tokens) >= 2:
            state = _key(prompt_tokens[-2], prompt_tokens[-1])
            if state in self._successors:
                return state, []
        if prompt_tokens:
            candidates = self._states_after.get(prompt_tokens[-1].lower())
            if candidates:
                return rng.choice(candidates), []
        state = rng.choice(self._sentence_starts)
        return state, [self._spelling[state[1]]]

    def generate(self, prompt: str) -> Iterator[str]:
        """Tokens that continue prompt, endlessly; the caller decides when to stop.

        Seeded by the prompt alone, so the same prompt always yields the same tokens.
        """
        rng = random.Random(_seed(prompt))  # noqa: S311 - reproducible text, not secrets
        state, pending = self._start(tokenize(prompt), rng)
        yield from pending
        while True:
            successors = self._successors[state]
            token = rng.choices(successors.tokens, weights=successors.weights)[0]
            yield token
            state = (state[1], token.lower())

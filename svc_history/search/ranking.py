"""How hits are ranked and pages cut: the pure part of search (no Weaviate here).

- `fuse`: HYBRID's fusion of a BM25 ranking and a vector ranking.
- `ordered`: best first, equal scores by message id, so every page is cut from one order.
- `with_ties`: fetch the best `window` hits plus every hit tied with the last of them.
Why: docs/adr/0015-search.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

__all__ = ["IndexHit", "fuse", "ordered", "with_ties"]


@dataclass(frozen=True)
class IndexHit:
    conversation_id: str
    message_id: str
    text: str
    score: float


def _scaled(hits: list[IndexHit]) -> dict[str, float]:
    """Each hit's score as a share of its list's best (scores are positive: BM25, and
    similarities within the distance cut-off). Not min-max: that gives the weakest match
    of each list 0, so it would count for nothing."""
    best = max((h.score for h in hits), default=0.0)
    return {h.message_id: h.score / best if best > 0 else 0.0 for h in hits}


def fuse(words: list[IndexHit], meaning: list[IndexHit], alpha: float) -> list[IndexHit]:
    """Every hit of either list, scored (1 - alpha) * its share of the best BM25 score +
    alpha * its share of the best similarity (0 for a list it is not in)."""
    by_words, by_meaning = _scaled(words), _scaled(meaning)
    found = {h.message_id: h for h in [*meaning, *words]}
    return [
        replace(hit, score=(1 - alpha) * by_words.get(i, 0.0) + alpha * by_meaning.get(i, 0.0))
        for i, hit in found.items()
    ]


#: The most hits one query fetches while completing a run of equal scores (twice the
#: deepest reachable hit, search.max_results' default).
_MOST_FETCHED = 2_000


async def with_ties(fetch: Callable[[int], Awaitable[list[IndexHit]]], window: int) -> list[IndexHit]:
    """The best `window` hits and every hit that ties with the last of them: fetched
    again, twice as many each time, until a lower score shows that no tie is left out."""
    size = window + 1
    while True:
        hits = await fetch(size)
        if len(hits) < size or size >= _MOST_FETCHED:
            return hits
        scores = sorted((h.score for h in hits), reverse=True)
        if scores[-1] < scores[window - 1]:
            return hits
        size = min(size * 2, _MOST_FETCHED)


def ordered(hits: list[IndexHit]) -> list[IndexHit]:
    """Best first; equal scores by message id. Weaviate orders ties as it meets them, which
    need not be the same from one query to the next: pages are cut from this order instead."""
    return sorted(hits, key=lambda h: (-h.score, h.message_id))

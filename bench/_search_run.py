"""What every part of the search bench works with: the run's options, the corpus's sentences
embedded on Triton (and cached), progress lines, rates, ratios and latency summaries."""

from __future__ import annotations

import asyncio
import hashlib
import math
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench._measure import percentile
from bench._search_corpus import Corpus, Vectors, generate_sentences
from svc_history.search.embedding import Embedder, Vector

#: Texts per request to Triton and per chunk of the model alone (the model's max_batch_size).
EMBED_CHUNK = 64


@dataclass(frozen=True)
class Options:
    parts: tuple[str, ...]
    index_messages: int
    index_users: int
    embed_texts: int
    embed_concurrency: int
    embed_rounds: int
    sentences: int
    messages: int
    conversations: int
    import_batch: int
    queries: int
    warmup: int
    page_size: int
    seed: int
    keep_stack: bool
    json_path: Path | None


# The corpus (bench/_search_corpus.py), embedded and cached ------------------------------


async def load_corpus(cache_dir: Path, count: int, seed: int, embedder: Embedder) -> tuple[Corpus, bool]:
    """The sentences and their vectors, from the cache or embedded now on Triton (and cached).
    The cache is keyed by the sentences themselves: other word lists make another file."""
    sentences, topics = generate_sentences(count, seed)
    digest = hashlib.sha256("\n".join(sentences).encode()).hexdigest()[:16]
    path = cache_dir / f"search-sentences-minilm-l6-{digest}.npz"
    if path.is_file():
        with np.load(path) as stored:
            if list(stored["sentences"]) == sentences:
                return Corpus(sentences, topics, stored["vectors"].astype(np.float32)), True
    progress(f"embedding {count} sentences on Triton (cached for the next run)")
    vectors = np.asarray(await embed_all(embedder, sentences, 4), dtype=np.float32)
    await asyncio.to_thread(_store, path, sentences, vectors)
    return Corpus(sentences, topics, vectors), False


def _store(path: Path, sentences: list[str], vectors: Vectors) -> None:
    """Write the cache file whole or not at all (a run stopped halfway leaves no torn file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp.npz")
    np.savez(partial, sentences=np.array(sentences), vectors=vectors)
    partial.replace(path)


async def embed_all(embedder: Embedder, texts: Sequence[str], concurrency: int) -> list[Vector]:
    """Every text's vector, in requests of EMBED_CHUNK, `concurrency` requests at once."""
    chunks = [texts[start : start + EMBED_CHUNK] for start in range(0, len(texts), EMBED_CHUNK)]
    results: list[list[Vector]] = [[] for _ in chunks]

    async def embed(index: int) -> None:
        results[index] = await embedder.embed(chunks[index], timeout_s=300)

    await pooled(range(len(chunks)), embed, concurrency)
    return [vector for chunk in results for vector in chunk]


# Helpers ----------------------------------------------------------------------------------


async def pooled(items: Iterable[Any], work: Callable[[Any], Awaitable[None]], concurrency: int) -> None:
    """`work` on every item, `concurrency` at once."""
    iterator = iter(items)

    async def worker() -> None:
        for item in iterator:
            await work(item)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Count, mean, p50 and p99 of durations (seconds in, milliseconds out)."""
    return {
        "count": len(seconds),
        "mean_ms": sum(seconds) / len(seconds) * 1000 if seconds else math.nan,
        "p50_ms": percentile(seconds, 0.50) * 1000,
        "p99_ms": percentile(seconds, 0.99) * 1000,
    }


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else math.nan


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def progress(message: str) -> None:
    print(f"bench: {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)

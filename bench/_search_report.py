"""The search bench's headline numbers as plain tables (--json writes them all)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _rows(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Columns: the first and a "detail" column aligned left, numbers right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    left = {0} | {i for i, name in enumerate(rows[0]) if name == "detail"}
    return [
        "  ".join(cell.ljust(width) if i in left else cell.rjust(width) for i, (cell, width) in
                  enumerate(zip(row, widths, strict=True))).rstrip()
        for row in rows
    ]  # fmt: skip


def table(results: dict[str, Any]) -> str:
    """The headline numbers as plain tables."""
    machine = results["machine"]
    parts = ", ".join(f"{name} {_fmt(seconds, 0)} s" for name, seconds in results["seconds_per_part"].items())
    corpus = results["corpus"]
    lines = [
        f"machine: {machine['cores']} cores, load average {machine['load_average_at_start']} at start, "
        f"{machine['load_average_at_end']} at end; took {_fmt(results['seconds'] / 60)} min ({parts})",
        f"sentences: {corpus['sentences']} over {corpus['topics']} topics "
        f"({'from the cache' if corpus['from_cache'] else 'embedded now'})",
    ]
    if "indexing" in results:
        lines += ["", *_indexing_table(results["indexing"])]
    if "embedding" in results:
        lines += ["", *_embedding_table(results["embedding"])]
    if "search" in results:
        lines += ["", *_search_table(results["search"])]
    return "\n".join(lines)


def _indexing_table(r: dict[str, Any]) -> list[str]:
    indexer, raw = r["indexer"], r["raw"]
    breakdown = (
        f"{_fmt(indexer['batches'], 0)} batches of {_fmt(indexer['messages_per_batch'], 0)}; embed "
        f"{_fmt(indexer['embed_s'])} s ({_fmt(indexer['embed_share'] * 100, 0)}%), upsert "
        f"{_fmt(indexer['upsert_s'])} s ({_fmt(indexer['upsert_share'] * 100, 0)}%), the rest "
        f"(Cassandra, acks, retry waits) {_fmt(indexer['rest_of_batches_s'])} s; retries "
        f"{_fmt(indexer['retries'], 0)}"
    )
    rows = [
        ("path", "messages/s", "seconds", "detail"),
        ("indexer", _fmt(indexer["messages_per_s"]), _fmt(indexer["seconds"]), breakdown),
        ("raw import", _fmt(raw["messages_per_s"]), _fmt(raw["seconds"]),
         f"MessageIndex.upsert, {r['indexer_batch_size']} objects per call"),
    ]  # fmt: skip
    return [
        f"indexing: {r['messages']} messages ({_fmt(r['words_per_message'])} words each) of {r['users']} "
        f"users in {r['conversations']} conversations",
        *_rows(rows),
        f"indexer / raw: {_fmt(r['indexer_to_raw_ratio'], 4)}",
    ]


def _embedding_table(r: dict[str, Any]) -> list[str]:
    cosine = r["composed_vs_model_cosine"]
    triton, alone = r["triton"], r["model_alone"]
    rows = [
        ("path", "texts/s", "seconds", "CPU ms/text", "detail"),
        ("triton", _fmt(triton["texts_per_s"]), _fmt(triton["seconds"]), _fmt(triton["cpu_ms_per_text"]),
         f"Embedder, requests of {r['request_texts']}, {r['concurrency']} at once; CPU: Triton's processes"),
        ("model alone", _fmt(alone["texts_per_s"]), _fmt(alone["seconds"]), _fmt(alone["cpu_ms_per_text"]),
         f"SentenceEncoder.embed, chunks of {r['request_texts']}"),
    ]  # fmt: skip
    return [
        f"embedding: {r['texts']} texts ({_fmt(r['words_per_text'])} words each), {r['rounds']} "
        "alternating rounds",
        *_rows(rows),
        f"triton / model alone: {_fmt(r['triton_to_model_ratio'], 3)} by texts/s, "
        f"{_fmt(r['triton_to_model_cpu_ratio'], 3)} by CPU per text  (largest difference between their "
        f"vectors: {r['max_abs_difference']:.1e})",
        f"composed vector vs the model's vector of the same text: cosine mean {_fmt(cosine['mean'], 3)}, "
        f"1st percentile {_fmt(cosine['p01'], 3)}, min {_fmt(cosine['min'], 3)}",
    ]


def _search_table(r: dict[str, Any]) -> list[str]:
    latency = [("mode (ms)", "platform p50", "p99", "raw p50", "p99", "platform/raw p50", "p99")]
    parts = [
        ("mode (ms)", "read back p50", "p99", "whole trees p50", "p99", "hits", "conversations", "empty")
    ]
    for mode, m in r["modes"].items():
        platform, raw, back, trees = m["platform"], m["raw"], m["read_back"], m["trees"]
        latency.append((
            mode, _fmt(platform["p50_ms"]), _fmt(platform["p99_ms"]), _fmt(raw["p50_ms"]),
            _fmt(raw["p99_ms"]), _fmt(m["p50_ratio"], 2), _fmt(m["p99_ratio"], 2),
        ))  # fmt: skip
        parts.append((
            mode, _fmt(back["p50_ms"]), _fmt(back["p99_ms"]), _fmt(trees["p50_ms"]), _fmt(trees["p99_ms"]),
            _fmt(m["hits_mean"]), _fmt(m["conversations_per_page"]), f"{_fmt(m['empty_share'] * 100, 0)}%",
        ))  # fmt: skip
    embed = r["embed_query"]
    examples = ", ".join(repr(q) for q in r["example_queries"][:3])
    return [
        f"search: {r['messages']} messages of one user in {r['conversations']} conversations (composed "
        f"vectors); Cassandra {_fmt(r['cassandra_messages_per_s'], 0)} messages/s, Weaviate import "
        f"{_fmt(r['weaviate_import_objects_per_s'], 0)} objects/s",
        f"{r['queries']} queries per mode after {r['warmup']}, {r['page_size']} hits per page; "
        f"e.g. {examples}",
        *_rows(latency),
        "",
        "the parts of a platform call, each alone:",
        *_rows(parts),
        f"embed one query on Triton: p50 {_fmt(embed['p50_ms'])} ms, p99 {_fmt(embed['p99_ms'])} ms",
        "(read back: SearchMessages' Cassandra reads for a page's hits; whole trees: each hit "
        "conversation's whole message tree, read at once, as the read back did before; "
        "hits, conversations: mean per page; empty: pages without a hit)",
    ]

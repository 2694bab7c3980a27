"""The router bench's headline numbers as a plain table (the JSON after it holds them all)."""

from __future__ import annotations

import math
from typing import Any

from bench._router_load import ITL_BUDGET_MS


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.1f}"
    return str(value)


def table(results: dict[str, Any]) -> str:
    """The headline numbers as a plain table."""
    rows = [
        (
            "streams",
            "path",
            "TTFT p50",
            "TTFT p99",
            "ITL p99",
            "tok/s",
            "+TTFT p50",
            "+TTFT p99",
            "+ITL p99",
            "router +TTFT",
        )
    ]
    for level, entry in results.get("latency", {}).items():
        if level == "script":
            continue
        for path, r in entry["paths"].items():
            extra = entry["added"].get(path, {})
            rows.append((
                level, path, _fmt(r["ttft_p50_ms"]), _fmt(r["ttft_p99_ms"]), _fmt(r["itl_p99_ms"]),
                _fmt(r["tokens_per_s"]), _fmt(extra.get("added_ttft_p50_ms", math.nan)),
                _fmt(extra.get("added_ttft_p99_ms", math.nan)), _fmt(extra.get("added_itl_p99_ms", math.nan)),
                _fmt(r.get("router_added_ttft_mean_ms", math.nan)),
            ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.append("")
    for path, entry in results.get("saturation", {}).items():
        if isinstance(entry, dict) and "ratio" in entry:
            lines.append(
                f"saturation {path}: {entry['tokens_per_s']:.0f} tok/s, straight "
                f"{entry['straight_tokens_per_s']:.0f} (ratio {entry['ratio']:.2f}); proxy CPU "
                f"{entry['proxy_cpu_ms_per_1k_tokens']:.0f} ms per 1k tokens"
            )
    for path, entry in results.get("idle_memory", {}).items():
        lines.append(
            f"idle memory {path}: {entry['kib_per_stream']:.1f} KiB per stream ({entry['streams']} streams)"
        )
    held = results.get("sweep", {}).get("max_streams_itl_p99_under_5ms", {})
    for path, count in held.items():
        lines.append(f"sweep {path}: held {count} streams with added ITL p99 under {ITL_BUDGET_MS:g} ms")
    return "\n".join(lines)

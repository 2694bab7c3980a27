"""What every benchmark measures the same way: percentiles, and a process's CPU from /proc."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["cpu_delta", "cpu_s", "percentile", "tree_cpu_s"]

_TICK = os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest rank: the smallest value with at least `fraction` of the values at or below it."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def cpu_s(pid: int) -> float:
    """The CPU seconds (user and system) the process has used; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per process between two readings."""
    return {name: round(after[name] - before.get(name, 0.0), 3) for name in after}


def tree_cpu_s(pid: int) -> float:
    """The CPU seconds of a process and every process below it (a server's workers: Triton
    runs each model in a child process)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            children.setdefault(parent, []).append(int(entry.name))
    total, frontier = 0.0, [pid]
    while frontier:
        current = frontier.pop()
        total += cpu_s(current)
        frontier += children.get(current, [])
    return total


def json_ready(value: Any, *, places: int = 4) -> Any:
    """Results as JSON takes them: floats rounded, NaN as null, keys as strings."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, places)
    if isinstance(value, dict):
        return {str(k): json_ready(v, places=places) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v, places=places) for v in value]
    return value

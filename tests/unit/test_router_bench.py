"""The router bench's statistics and inputs (bench/router_bench.py and its private
modules), without any server."""

from __future__ import annotations

import math
from pathlib import Path

from bench._measure import percentile
from bench._router_load import Window, compare
from bench._router_paths import Script
from bench._router_stack import OPENAI_MODEL, TRITON_MODEL, bench_catalog
from parley_core.catalog import OpenAIBackend, load_catalog


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1 .. 100
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0, 3.0], 0.99) == 7.0


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 0.5))


def test_window_counts_only_what_falls_inside_it() -> None:
    window = Window(start=10.0, end=20.0)
    assert window.inside(10.0)
    assert not window.inside(20.0)
    assert not window.inside(9.99)


def test_window_summary_in_milliseconds_and_tokens_per_second() -> None:
    window = Window(start=0.0, end=2.0, ttfts=[0.010, 0.030], gaps=[0.1] * 99 + [0.5], tokens=300, turns=3)
    summary = window.summary(2.0)
    assert summary["ttft_p50_ms"] == 10.0
    assert summary["ttft_p99_ms"] == 30.0
    assert summary["itl_p50_ms"] == 100.0
    assert summary["itl_p99_ms"] == 100.0  # the one 500 ms gap is the 100th of 100: above p99
    assert summary["tokens_per_s"] == 150.0


def test_compare_subtracts_the_straight_path_measured_beside_it() -> None:
    straight = {"ttft_p50_ms": 20.0, "ttft_p99_ms": 30.0, "itl_p50_ms": 100.0, "itl_p99_ms": 110.0,
                "tokens_per_s": 1000.0}  # fmt: skip
    proxy = {"ttft_p50_ms": 25.0, "ttft_p99_ms": 45.0, "itl_p50_ms": 100.5, "itl_p99_ms": 113.0,
             "tokens_per_s": 800.0}  # fmt: skip
    added = compare({"openai": straight, "litellm": proxy})
    assert added == {
        "litellm": {
            "added_ttft_p50_ms": 5.0,
            "added_ttft_p99_ms": 15.0,
            "added_itl_p50_ms": 0.5,
            "added_itl_p99_ms": 3.0,
            "tokens_per_s_ratio": 0.8,
        }
    }


def test_script_is_a_directive_every_path_carries() -> None:
    script = Script(ttft_ms=20, tokens_per_second=5, reply_tokens=10)
    assert script.text() == "benchmark turn [scripted ttft_ms=20 tokens_per_second=5 reply_tokens=10]"
    assert script.turn_s == 0.02 + 10 / 5


def test_bench_catalog_passes_the_catalog_checks(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(bench_catalog())
    catalog = load_catalog(path)
    assert catalog.default_model == TRITON_MODEL
    triton, openai = catalog.model(TRITON_MODEL), catalog.model(OPENAI_MODEL)
    assert [(b.kind, b.model) for b in triton.backends] == [("triton", "parley-scripted")]
    [backend] = openai.backends
    assert isinstance(backend, OpenAIBackend)
    assert (backend.endpoint, backend.model) == ("bench", "scripted")

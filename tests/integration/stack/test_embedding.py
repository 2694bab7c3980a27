"""minilm-l6 on the stack's Triton: all-MiniLM-L6-v2 sentence embeddings, dynamically batched.

Without PyTorch, sentence-transformers cannot run here to give the exact vectors; instead the
vectors are checked against an independent export of the same model (an int8 ONNX file run on
ONNX Runtime, data/minilm_int8_reference.json) and for what a wrong implementation breaks:
unit length, and a paraphrase closer than unrelated text.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from tritonclient.grpc import InferInput
from tritonclient.grpc.aio import InferenceServerClient

pytestmark = pytest.mark.integration

MODEL = "minilm-l6"
DIMENSIONS = 384
REFERENCE = Path(__file__).parent / "data" / "minilm_int8_reference.json"

Vectors = npt.NDArray[np.float32]


async def _embed(client: InferenceServerClient, texts: list[str]) -> Vectors:
    tensor = InferInput("text", [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[text.encode()] for text in texts], dtype=np.object_))
    result = await client.infer(MODEL, [tensor], client_timeout=60)
    vectors: Vectors = result.as_numpy("embedding")
    return vectors


def _cosine(a: Vectors, b: Vectors) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


async def test_vectors_match_an_independent_export_of_the_model(triton: InferenceServerClient) -> None:
    reference = json.loads(REFERENCE.read_text())["texts"]
    vectors = await _embed(triton, [entry["text"] for entry in reference])

    assert vectors.shape == (len(reference), DIMENSIONS)
    assert vectors.dtype == np.float32
    for entry, vector in zip(reference, vectors, strict=True):
        expected = np.array(entry["embedding"], dtype=np.float32)
        # int8 weights move the vectors a little (measured: cosine 0.996-0.9997 with the
        # float32 model); a wrong pooling, mask, normalisation or layer lands far below.
        assert _cosine(vector, expected) > 0.99, entry["text"]


async def test_vectors_have_unit_length(triton: InferenceServerClient) -> None:
    vectors = await _embed(triton, ["short", "A much longer sentence about lighthouses and the sea."])

    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


async def test_a_paraphrase_is_closer_than_unrelated_text(triton: InferenceServerClient) -> None:
    query, paraphrase, unrelated, other = await _embed(
        triton,
        ["automobile repair", "How do I fix my car?", "I love pizza with extra cheese", "What time is it?"],
    )

    assert _cosine(query, paraphrase) > 0.5  # measured 0.63
    assert _cosine(query, unrelated) < 0.2
    assert _cosine(query, other) < 0.2


async def test_batched_texts_get_the_vectors_they_get_alone(triton: InferenceServerClient) -> None:
    texts = [f"message {i}: " + "the keeper climbed the stairs " * (i % 7) for i in range(32)]

    together = await _embed(triton, texts)
    # 32 concurrent single requests: the dynamic batcher joins them into batches of its choosing.
    alone = np.concatenate(await asyncio.gather(*(_embed(triton, [text]) for text in texts)))

    # Padding is masked out; only float rounding differs between batch shapes.
    np.testing.assert_allclose(together, alone, atol=1e-5)


async def test_an_oversized_text_is_cut_to_its_first_256_word_pieces(triton: InferenceServerClient) -> None:
    # "lighthouse" is one word piece: 254 of them plus [CLS] and [SEP] fill the window.
    window = "lighthouse " * 254
    vectors = await _embed(triton, [window, window + "pizza cheese " * 5000])

    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)


async def test_an_empty_text_gets_a_unit_vector(triton: InferenceServerClient) -> None:
    (empty,) = await _embed(triton, [""])

    assert np.isfinite(empty).all()
    assert abs(float(np.linalg.norm(empty)) - 1) < 1e-5

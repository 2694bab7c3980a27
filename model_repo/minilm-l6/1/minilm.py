"""all-MiniLM-L6-v2 in numpy: sentence embeddings as sentence-transformers computes them.

The model is a 6-layer BERT (384 hidden, 12 heads, 1536 intermediate, erf GELU, LayerNorm eps
1e-12) followed by mean pooling over the text's word pieces and L2 normalisation. Its weights
are read from the `model.safetensors` that the weights package ships, memory-mapped, and the
WordPiece tokenizer is the package's own `tokenizer.json` run by the `tokenizers` library, so
the only runtime dependencies are numpy and tokenizers (no PyTorch, no ONNX file needed).
docs/adr/0014-embedding-model.md says why and what it costs.

Results do not depend on how texts are batched beyond float rounding (~1e-7): every text is
padded only to the longest text of its chunk, and padding is masked out of attention and pooling.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

DIMENSIONS = 384
# sentence-transformers' max_seq_length for this model (sentence_bert_config.json), special
# tokens included: a longer text is embedded by its first 254 word pieces.
MAX_WORD_PIECES = 256
_LAYERS = 6
_HEADS = 12
_HEAD_SIZE = DIMENSIONS // _HEADS
_LAYER_NORM_EPS = 1e-12
# Added to the attention scores of padding positions; exp() of it is exactly 0 in float32.
_MASKED = np.float32(-1e9)

Array = npt.NDArray[np.float32]


def _safetensors(path: Path) -> dict[str, Array]:
    """The float32 tensors of a .safetensors file, as read-only views of a memory map.

    The format is an 8-byte little-endian header length, a JSON header naming each tensor's
    dtype, shape and byte range, then the data. Mapping it costs no copy and no load time; the
    pages are shared through the page cache with any other process that maps the file.
    """
    with path.open("rb") as file:
        (header_size,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(header_size))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_size)
    tensors: dict[str, Array] = {}
    for name, entry in header.items():
        if name == "__metadata__" or entry["dtype"] != "F32":
            continue  # position_ids (int64) is not needed
        start, end = entry["data_offsets"]
        tensors[name] = data[start:end].view(np.float32).reshape(entry["shape"])
    return tensors


def _layer_norm(x: Array, weight: Array, bias: Array) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    variance = np.square(centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(variance + _LAYER_NORM_EPS) * weight + bias  # type: ignore[no-any-return]


def _gelu(x: Array) -> Array:
    """BERT's exact GELU, x * (1 + erf(x / sqrt 2)) / 2, erf from Abramowitz & Stegun 7.1.26.

    numpy has no erf; this one's error is under 1.5e-7 (the tanh approximation that some BERT
    ports use differs by up to 1e-3). Few temporaries: it runs on the largest activations.
    """
    z = np.abs(x) * np.float32(1 / np.sqrt(2))
    t = z * np.float32(0.3275911)
    t += 1
    np.reciprocal(t, out=t)
    poly = t * np.float32(1.061405429)
    for coefficient in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly += np.float32(coefficient)
        poly *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    poly *= z  # 1 - erf(|x|)
    np.subtract(1, poly, out=poly)
    np.copysign(poly, x, out=poly)  # erf(x)
    poly += 1
    poly *= x
    poly *= np.float32(0.5)
    return poly


class _Layer:
    """One encoder layer's weights, laid out for `x @ w` (the file stores `w.T`)."""

    def __init__(self, tensors: dict[str, Array], index: int) -> None:
        prefix = f"encoder.layer.{index}."

        def weight(name: str) -> Array:
            return tensors[prefix + name + ".weight"]

        def bias(name: str) -> Array:
            return tensors[prefix + name + ".bias"]

        parts = ("attention.self.query", "attention.self.key", "attention.self.value")
        # Query, key and value in one matrix: one matmul instead of three (a 1.7 MB copy).
        self.qkv = np.ascontiguousarray(np.concatenate([weight(part) for part in parts]).T)
        self.qkv_bias = np.concatenate([bias(part) for part in parts])
        self.attention_out = np.ascontiguousarray(weight("attention.output.dense").T)
        self.attention_out_bias = bias("attention.output.dense")
        self.attention_norm = (weight("attention.output.LayerNorm"), bias("attention.output.LayerNorm"))
        self.intermediate = np.ascontiguousarray(weight("intermediate.dense").T)
        self.intermediate_bias = bias("intermediate.dense")
        self.output = np.ascontiguousarray(weight("output.dense").T)
        self.output_bias = bias("output.dense")
        self.output_norm = (weight("output.LayerNorm"), bias("output.LayerNorm"))

    def __call__(self, hidden: Array, scores_mask: Array) -> Array:
        batch, length, _ = hidden.shape
        hidden = hidden.reshape(batch * length, DIMENSIONS)  # 2-D matmuls go straight to BLAS
        qkv = hidden @ self.qkv + self.qkv_bias  # [batch * length, 3 * 384]
        qkv = qkv.reshape(batch, length, 3, _HEADS, _HEAD_SIZE).transpose(2, 0, 3, 1, 4)
        query, key, value = qkv[0], qkv[1], qkv[2]  # [batch, heads, length, head size]
        scores = query @ key.transpose(0, 1, 3, 2) * np.float32(1 / np.sqrt(_HEAD_SIZE)) + scores_mask
        scores -= scores.max(axis=-1, keepdims=True)
        weights = np.exp(scores)
        weights /= weights.sum(axis=-1, keepdims=True)
        context = (weights @ value).transpose(0, 2, 1, 3).reshape(batch * length, DIMENSIONS)
        attended = _layer_norm(
            context @ self.attention_out + self.attention_out_bias + hidden, *self.attention_norm
        )
        intermediate = _gelu(attended @ self.intermediate + self.intermediate_bias)
        output = _layer_norm(intermediate @ self.output + self.output_bias + attended, *self.output_norm)
        return output.reshape(batch, length, DIMENSIONS)


class SentenceEncoder:
    """all-MiniLM-L6-v2 from a folder holding `model.safetensors` and `tokenizer.json`."""

    def __init__(self, model_dir: Path, *, chunk_size: int = 8) -> None:
        tensors = _safetensors(model_dir / "model.safetensors")
        self._word_embeddings = tensors["embeddings.word_embeddings.weight"]
        self._position_embeddings = tensors["embeddings.position_embeddings.weight"]
        # Every text is one segment: token type 0.
        self._token_type_embedding = tensors["embeddings.token_type_embeddings.weight"][0]
        self._embedding_norm = (tensors["embeddings.LayerNorm.weight"], tensors["embeddings.LayerNorm.bias"])
        self._layers = [_Layer(tensors, index) for index in range(_LAYERS)]
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # The file asks for 128 pieces padded to a fixed 128; sentence-transformers truncates at
        # 256, and padding to the longest text of a chunk wastes less.
        self._tokenizer.enable_truncation(MAX_WORD_PIECES)
        self._tokenizer.no_padding()
        self._chunk_size = chunk_size

    def word_pieces(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's word-piece ids, [CLS] and [SEP] included, cut to MAX_WORD_PIECES."""
        return [encoding.ids for encoding in self._tokenizer.encode_batch(list(texts))]

    def embed(self, texts: Sequence[str]) -> Array:
        """One unit-length 384-float vector per text, in order ([len(texts), 384])."""
        ids = self.word_pieces(texts)
        vectors = np.empty((len(ids), DIMENSIONS), dtype=np.float32)
        # Texts of similar length run together, so a long text does not make short ones pay for
        # its padding.
        order = sorted(range(len(ids)), key=lambda index: len(ids[index]))
        for start in range(0, len(order), self._chunk_size):
            chunk = order[start : start + self._chunk_size]
            vectors[chunk] = self._embed_chunk([ids[index] for index in chunk])
        return vectors

    def _embed_chunk(self, ids: list[list[int]]) -> Array:
        length = max(len(pieces) for pieces in ids)
        token_ids = np.zeros((len(ids), length), dtype=np.int64)  # [PAD] is id 0
        mask = np.zeros((len(ids), length), dtype=np.float32)
        for row, pieces in enumerate(ids):
            token_ids[row, : len(pieces)] = pieces
            mask[row, : len(pieces)] = 1
        embedded = self._word_embeddings[token_ids] + self._position_embeddings[:length]
        hidden = _layer_norm(embedded + self._token_type_embedding, *self._embedding_norm)
        scores_mask = ((1 - mask) * _MASKED)[:, None, None, :]  # [batch, 1, 1, length]
        for layer in self._layers:
            hidden = layer(hidden, scores_mask)
        pooled = (hidden * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return (pooled / norms).astype(np.float32)  # type: ignore[no-any-return]

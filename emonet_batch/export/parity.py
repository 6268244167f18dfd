"""Parity of an exported graph with the unfused PyTorch reference, on a fixed image set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..model.accuracy import Parity, compare_outputs, parity_pixels
from ..model.record import GRAPH_INPUT, GRAPH_OUTPUTS, HEADS_INPUT, HEADS_OUTPUTS
from .checkpoint import HeadSet
from .reference import ReferenceModel

#: The largest |score difference| an fp32 export may have against the reference.
FP32_PARITY_TOLERANCE = 1e-4


def check_parity(
    reference: ReferenceModel,
    onnx_path: Path,
    heads: Sequence[str],
    neutral: dict[str, float],
    image_size: int,
    count: int,
    seed: int,
) -> Parity:
    """ONNX Runtime vs the unfused PyTorch reference on a fixed image set (batch != export batch, so the
    dynamic batch axis is exercised too)."""
    import onnxruntime as ort

    pixels = parity_pixels(count, image_size, seed)
    want_scores, want_embedding = (t.numpy() for t in reference(torch.from_numpy(pixels)))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got_scores, got_embedding = session.run(list(GRAPH_OUTPUTS), {GRAPH_INPUT: pixels})
    return compare_outputs(want_scores, want_embedding, got_scores, got_embedding, heads, neutral)


def check_heads_parity(
    heads: HeadSet, onnx_path: Path, neutral: dict[str, float], width: int, normalize: bool, count: int, seed: int
) -> Parity:
    """A heads-only graph in ONNX Runtime vs each head in PyTorch, on the same random embeddings (unit length
    when the tower's are)."""
    import onnxruntime as ort

    embedding = np.random.default_rng(seed).standard_normal((count, width)).astype(np.float32)
    if normalize:
        embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
    with torch.no_grad():
        inputs = torch.from_numpy(embedding)
        want = torch.cat([head.eval()(inputs) for head in heads.modules], dim=1).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(list(HEADS_OUTPUTS), {HEADS_INPUT: embedding})
    return compare_outputs(want, embedding, got, embedding, heads.columns, neutral)

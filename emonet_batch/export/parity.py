"""Parity of an exported graph with the unfused PyTorch reference, on a fixed image set."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..job.decode import decode_image
from ..model.accuracy import Parity, compare_outputs, parity_pixels
from ..model.record import (
    GRAPH_INPUT,
    GRAPH_OUTPUTS,
    HEADS_INPUT,
    HEADS_ONNX,
    HEADS_OUTPUTS,
    MODEL_ONNX,
    TOWER_ONNX,
)
from .checkpoint import HeadSet
from .reference import ReferenceModel

#: The largest |score difference| an fp32 export may have against the reference.
FP32_PARITY_TOLERANCE = 1e-4
#: The source sizes of the calibration JPEGs the decode error is measured on (faces as corpora hold them), their
#: JPEG quality, and how many of each size.
DECODE_SOURCE_SIZES = (512, 768, 1024, 1536)
DECODE_JPEG_QUALITY = 90
DECODE_IMAGES_PER_SIZE = 4


def check_parity(
    reference: ReferenceModel,
    model_dir: Path,
    heads: Sequence[str],
    neutral: dict[str, float],
    image_size: int,
    count: int,
    seed: int,
) -> Parity:
    """ONNX Runtime vs the unfused PyTorch reference on a fixed image set (batch != export batch, so the
    dynamic batch axis is exercised too): the fused graph and its two halves, the worse of the two."""
    pixels = parity_pixels(count, image_size, seed)
    want_scores, want_embedding = (t.numpy() for t in reference(torch.from_numpy(pixels)))
    measured = [
        compare_outputs(want_scores, want_embedding, got_scores, got_embedding, heads, neutral)
        for got_scores, got_embedding in exported_outputs(model_dir, pixels)
    ]
    return max(measured, key=lambda parity: parity.max_abs_score_diff)


def exported_outputs(model_dir: Path, pixels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(scores, embedding) as each way of running a full export gives them: the fused graph (a GPU's) and its two
    halves, the tower's embedding into the heads (a CPU's)."""
    fused = cpu_session(model_dir / MODEL_ONNX).run(list(GRAPH_OUTPUTS), {GRAPH_INPUT: pixels})
    (embedding,) = cpu_session(model_dir / TOWER_ONNX).run([HEADS_INPUT], {GRAPH_INPUT: pixels})
    (scores,) = cpu_session(model_dir / HEADS_ONNX).run(list(HEADS_OUTPUTS), {HEADS_INPUT: embedding})
    return [(fused[0], fused[1]), (scores, embedding)]


def cpu_session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_heads_parity(
    heads: HeadSet, onnx_path: Path, neutral: dict[str, float], width: int, normalize: bool, count: int, seed: int
) -> Parity:
    """A heads-only graph in ONNX Runtime vs each head in PyTorch, on the same random embeddings (unit length
    when the tower's are)."""
    embedding = np.random.default_rng(seed).standard_normal((count, width)).astype(np.float32)
    if normalize:
        embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
    with torch.no_grad():
        inputs = torch.from_numpy(embedding)
        want = torch.cat([head.eval()(inputs) for head in heads.modules], dim=1).numpy()
    (got,) = cpu_session(onnx_path).run(list(HEADS_OUTPUTS), {HEADS_INPUT: embedding})
    return compare_outputs(want, embedding, got, embedding, heads.columns, neutral)


def check_decode(
    reference: ReferenceModel,
    onnx_path: Path,
    heads: Sequence[str],
    neutral: dict[str, float],
    image_size: int,
    resize_filter: str,
    seed: int,
) -> dict[str, Any]:
    """The error of the default pipeline, decode and precision together: calibration JPEGs at DECODE_SOURCE_SIZES
    decoded fast (DCT-domain downscaling) and scored by the exported graph, against the reference preprocessing
    (full decode, the model's resize filter) and the fp32 PyTorch reference. The same with the exact decode beside
    it, to tell the decode's share from the precision's."""
    jpegs = calibration_jpegs(seed)
    exact = np.stack([decode_image(data, image_size, resize_filter, fast=False) for data in jpegs])
    fast = np.stack([decode_image(data, image_size, resize_filter, fast=True) for data in jpegs])
    want_scores, want_embedding = (t.numpy() for t in reference(torch.from_numpy(exact)))
    session = cpu_session(onnx_path)
    measured = {}
    for name, pixels in (("fast", fast), ("exact", exact)):
        got_scores, got_embedding = session.run(list(GRAPH_OUTPUTS), {GRAPH_INPUT: pixels})
        measured[name] = compare_outputs(want_scores, want_embedding, got_scores, got_embedding, heads, neutral)
    return {"source_sizes": list(DECODE_SOURCE_SIZES), **{name: p.as_dict() for name, p in measured.items()}}


def calibration_jpegs(seed: int) -> list[bytes]:
    """JPEGs with a photo's statistics at each calibration size: smooth shading and soft blobs (drawn at 1/8 of the
    size and enlarged: they are smooth, and drawing them at full size took seconds), hard edges (outlines, a face's
    features, hair: where a downscaled decode differs most), mild sensor noise, at a camera's JPEG quality."""
    rng = np.random.default_rng(seed)
    jpegs = []
    for size in DECODE_SOURCE_SIZES:
        small = size // 8
        ys, xs = np.mgrid[0:small, 0:small] / small
        for _ in range(DECODE_IMAGES_PER_SIZE):
            image = np.stack([rng.uniform(0.2, 0.8) + 0.2 * (xs * rng.uniform(-1, 1) + ys * rng.uniform(-1, 1))
                              for _ in range(3)], axis=-1)  # fmt: skip
            for _ in range(12):
                cy, cx, radius = rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85), rng.uniform(0.02, 0.15)
                blob = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * radius**2))
                image += blob[..., None] * rng.uniform(-0.4, 0.4, 3)
            shading = Image.fromarray(np.clip(image * 255, 0, 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
            draw_edges(ImageDraw.Draw(shading), size, rng)
            noise = rng.normal(0, 3, (size, size, 3)).astype(np.float32)
            pixels = np.clip(np.asarray(shading, np.float32) + noise, 0, 255).astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, "JPEG", quality=DECODE_JPEG_QUALITY)
            jpegs.append(buffer.getvalue())
    return jpegs


def draw_edges(draw: ImageDraw.ImageDraw, size: int, rng: np.random.Generator) -> None:
    """Hard-edged ellipses and strokes of random colours and widths."""
    for _ in range(10):
        x, y = rng.uniform(0, size, 2)
        w, h = rng.uniform(size / 40, size / 3, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.uniform() < 0.5:
            draw.ellipse([x, y, x + w, y + h], fill=colour, outline=(20, 15, 10), width=max(1, size // 200))
        else:
            draw.line([x, y, x + w, y + h], fill=colour, width=max(1, int(rng.uniform(1, size / 60))))

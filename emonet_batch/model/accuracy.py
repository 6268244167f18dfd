"""Accuracy of an inference path against the fp32 reference, and the limits a model must meet.

Pure numpy (no torch, no ONNX Runtime): the export records a Parity in model.json, `score` checks the
record against the limits, and the benchmarks report the same figures for every path they time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .postprocess import emotion_indices

#: The accuracy a model must have recorded against the fp32 PyTorch reference (its `parity` entry, measured
#: by the export on a fixed calibration set) for `score` to use it without --allow-inaccurate-model. Real
#: scores spread over roughly [-1, 3]; 0.05 is well under the gap that changes a top emotion in practice.
MAX_SCORE_ERROR = 0.05
MIN_EMBEDDING_COSINE = 0.999


@dataclass
class Parity:
    images: int
    max_abs_score_diff: float
    embedding_cosine_min: float
    top_emotion_agreement: float

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def compare_outputs(
    want_scores, want_embedding, got_scores, got_embedding, heads: Sequence[str], neutral: dict[str, float]
) -> Parity:
    """Accuracy of (got) against (want): max |Δ score|, min embedding cosine, top-emotion agreement
    (the top emotion as labels get it: argmax of the centered emotion scores)."""
    cosine = np.sum(want_embedding * got_embedding, axis=1) / (
        np.linalg.norm(want_embedding, axis=1) * np.linalg.norm(got_embedding, axis=1)
    )
    emotions = emotion_indices(heads)
    offset = np.array([neutral[h] for h in heads])[emotions]
    want_top = np.argmax(want_scores[:, emotions] - offset, axis=1)
    got_top = np.argmax(got_scores[:, emotions] - offset, axis=1)
    agreement = float(np.mean(want_top == got_top)) if emotions.size else 1.0
    return Parity(
        images=int(want_scores.shape[0]),
        max_abs_score_diff=float(np.max(np.abs(want_scores.astype(np.float64) - got_scores))),
        embedding_cosine_min=float(np.min(cosine)),
        top_emotion_agreement=agreement,
    )


def parity_pixels(count: int, size: int, seed: int) -> np.ndarray:
    """A fixed image set: smooth gradients with blobs plus noise, so the tower sees varied inputs."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    images = []
    for _ in range(count):
        base = np.stack(
            [
                np.sin(2 * np.pi * (rng.uniform(0.5, 3) * xs + rng.uniform(0.5, 3) * ys + rng.uniform()))
                for _ in range(3)
            ],
            axis=-1,
        )
        noise = rng.normal(0, 0.25, size=(size, size, 3))
        images.append(np.clip((base * 0.5 + 0.5 + noise) * 255, 0, 255).astype(np.uint8))
    return np.stack(images)


def accuracy_problems(record: dict[str, Any]) -> list[str]:
    """What in the model's recorded parity exceeds the documented limits (empty when it is accurate)."""
    return parity_problems(record.get("parity") or {})


def fast_decode_problems(record: dict[str, Any]) -> list[str]:
    """What in the error of the default pipeline (fast JPEG decode and the model's precision together, measured by
    the export as `decode_parity`) exceeds the limits; empty when the fast decode keeps the model within them."""
    return parity_problems((record.get("decode_parity") or {}).get("fast") or {}, "with the fast JPEG decode")


def parity_problems(parity: dict[str, Any], measured: str = "against fp32") -> list[str]:
    if "max_abs_score_diff" not in parity or "embedding_cosine_min" not in parity:
        return [f"no recorded accuracy {measured}"]
    problems = []
    if not parity["max_abs_score_diff"] <= MAX_SCORE_ERROR:
        problems.append(f"max |score difference| {parity['max_abs_score_diff']:.3g} > {MAX_SCORE_ERROR:g}")
    if not parity["embedding_cosine_min"] >= MIN_EMBEDDING_COSINE:
        problems.append(f"embedding cosine min {parity['embedding_cosine_min']:.6f} < {MIN_EMBEDDING_COSINE:g}")
    return problems

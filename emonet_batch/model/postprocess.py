"""Score post-processing (numpy only), as LAION computes it for the published outputs:

    centered = raw - neutral_mean[head]
    softmax  = softmax over the 40 taxonomy emotions' centered values (the 4 extra dimensions are
               centered but take no part; their softmax is NaN)

Checked against ferd.jsonl of the EmoNet-Face release in the tests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources

import numpy as np

from .taxonomy import DIMENSIONS, EMOTIONS, column_name, head_file_stem, is_emotion, label_of


def packaged_neutral_means() -> dict[str, float]:
    """Neutral mean per head column name, from the packaged `data/neutral_means.json`."""
    text = resources.files(__package__).joinpath("data/neutral_means.json").read_text(encoding="utf-8")
    by_file = json.loads(text)["heads"]
    return {
        column_name(label): float(by_file[f"model_{head_file_stem(label)}_best"]) for label in EMOTIONS + DIMENSIONS
    }


def derive(raw: np.ndarray, heads: Sequence[str], neutral_means: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Centered scores and the emotion softmax for raw head outputs.

    raw: float array [N, H]; heads: the H column names; neutral_means: column name -> float.
    Returns {"centered": [N, H], "softmax": [N, H]} (float64; softmax NaN outside the 40 emotions).
    """
    raw = np.asarray(raw, dtype=np.float64)
    heads = list(heads)
    if raw.ndim != 2 or raw.shape[1] != len(heads):
        raise ValueError(f"raw scores have shape {raw.shape}, expected [N, {len(heads)}] for {len(heads)} heads")
    missing = [h for h in heads if h not in neutral_means]
    if missing:
        raise KeyError(f"no neutral mean for heads: {', '.join(missing)}")
    centered = raw - np.array([neutral_means[h] for h in heads], dtype=np.float64)
    softmax = np.full_like(centered, np.nan)
    emotion_idx = emotion_indices(heads)
    if emotion_idx.size:
        softmax[:, emotion_idx] = _softmax(centered[:, emotion_idx])
    return {"centered": centered, "softmax": softmax}


def emotion_indices(heads: Sequence[str]) -> np.ndarray:
    """Positions of the taxonomy emotions among `heads` (the columns the softmax runs over)."""
    return np.array([i for i, h in enumerate(heads) if is_emotion(h)], dtype=np.int64)


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def top_k(values: np.ndarray, heads: Sequence[str], k: int = 3) -> list[list[tuple[str, float]]]:
    """Per row, the k emotion heads with the highest values, as (column name, value), best first.
    Non-emotion heads are ignored, so `softmax` and `centered` rank the same way."""
    idx = emotion_indices(heads)
    if idx.size == 0:
        raise ValueError("top_k needs at least one of the 40 emotion heads")
    sub = np.asarray(values)[:, idx]
    k = min(k, idx.size)
    # stable sort on the negated values: ties keep the official taxonomy order
    order = np.argsort(-sub, axis=1, kind="stable")[:, :k]
    return [[(heads[idx[j]], float(sub[row, j])) for j in order[row]] for row in range(sub.shape[0])]


def top_emotion(softmax: np.ndarray, heads: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The best emotion per row as (taxonomy labels, their softmax probabilities)."""
    idx = emotion_indices(heads)
    if idx.size == 0:
        raise ValueError("top_emotion needs at least one of the 40 emotion heads")
    sub = np.asarray(softmax)[:, idx]
    best = np.argmax(sub, axis=1)
    labels = [label_of(heads[idx[j]]) for j in best]
    return labels, sub[np.arange(sub.shape[0]), best]

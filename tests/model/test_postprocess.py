import json
from pathlib import Path

import numpy as np
import pytest

from emonet_batch.postprocess import derive, packaged_neutral_means, top_emotion, top_k
from emonet_batch.taxonomy import DIMENSIONS, EMOTIONS, HEAD_COLUMNS, column_name, head_file_stem

FERD = Path(__file__).parents[1] / "data" / "ferd.jsonl"
FILE_KEYS = [f"model_{head_file_stem(label)}_best" for label in EMOTIONS + DIMENSIONS]


def ferd_arrays(field):
    rows = [json.loads(line)["results"] for line in FERD.read_text().splitlines() if line.strip()]
    return np.array(
        [[np.nan if r[k][field] is None else r[k][field] for k in FILE_KEYS] for r in rows], dtype=np.float64
    )


def test_derive_reproduces_laion_published_outputs():
    raw = ferd_arrays("raw")
    assert raw.shape == (152, 44)
    out = derive(raw, HEAD_COLUMNS, packaged_neutral_means())
    assert np.max(np.abs(out["centered"] - ferd_arrays("mean_subtracted"))) <= 1e-6
    want_softmax = ferd_arrays("softmax")
    assert np.max(np.abs(out["softmax"][:, :40] - want_softmax[:, :40])) <= 1e-6
    assert np.isnan(out["softmax"][:, 40:]).all() and np.isnan(want_softmax[:, 40:]).all()
    np.testing.assert_allclose(out["softmax"][:, :40].sum(axis=1), 1.0, atol=1e-12)


def test_derive_works_on_any_subset_and_order_of_heads():
    raw = ferd_arrays("raw")
    full = derive(raw, HEAD_COLUMNS, packaged_neutral_means())
    picked = ["valence", "sadness", "amusement", "anger"]
    idx = [HEAD_COLUMNS.index(h) for h in picked]
    sub = derive(raw[:, idx], picked, packaged_neutral_means())
    np.testing.assert_allclose(sub["centered"], full["centered"][:, idx])
    assert np.isnan(sub["softmax"][:, 0]).all()
    np.testing.assert_allclose(sub["softmax"][:, 1:].sum(axis=1), 1.0)
    # the softmax runs over the present emotions only
    c = full["centered"][:, idx[1:]]
    np.testing.assert_allclose(sub["softmax"][:, 1:], np.exp(c) / np.exp(c).sum(axis=1, keepdims=True))


def test_derive_rejects_bad_shapes_and_unknown_heads():
    with pytest.raises(ValueError, match="expected"):
        derive(np.zeros((2, 3)), ["amusement", "anger"], packaged_neutral_means())
    with pytest.raises(KeyError, match="made_up"):
        derive(np.zeros((2, 1)), ["made_up"], packaged_neutral_means())


def test_top_k_and_top_emotion():
    heads = ["amusement", "valence", "anger", "sadness"]
    softmax = np.array([[0.2, np.nan, 0.5, 0.3], [0.7, np.nan, 0.1, 0.2]])
    assert top_k(softmax, heads, k=2) == [[("anger", 0.5), ("sadness", 0.3)], [("amusement", 0.7), ("sadness", 0.2)]]
    labels, probs = top_emotion(softmax, heads)
    assert labels == ["Anger", "Amusement"]
    np.testing.assert_allclose(probs, [0.5, 0.7])
    with pytest.raises(ValueError):
        top_emotion(np.zeros((1, 1)), ["valence"])


def test_top_emotion_on_ferd_matches_published_argmax():
    raw = ferd_arrays("raw")
    out = derive(raw, HEAD_COLUMNS, packaged_neutral_means())
    labels, _ = top_emotion(out["softmax"], HEAD_COLUMNS)
    want = [EMOTIONS[i] for i in np.nanargmax(ferd_arrays("softmax")[:, :40], axis=1)]
    assert labels == want
    assert column_name(labels[0]) == "amusement"  # 0000_Happy.jpg

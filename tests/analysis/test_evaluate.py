"""Evaluation on fixtures whose answers are known: predictions equal to the votes give AUC 1, reversed 0;
a synthetic HQ file in the real format where the model equals the expert median gives rho 1."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from emonet_batch.analysis.evaluate import EvaluateConfig, annotation_ids, majority_votes, run_evaluate
from emonet_batch.cli import main
from emonet_batch.taxonomy import EMOTION_COLUMNS, EMOTIONS

from ..shardkit import commit_by_hand

BINARY = Path(__file__).parents[1] / "data" / "binary_slice.csv"


def write_labels(output: Path, keys: list[str], scores: dict[str, np.ndarray]) -> None:
    """One committed label shard with the given keys and emotion scores."""
    columns = {"key": keys, **{c: scores.get(c, np.zeros(len(keys))).astype(np.float32) for c in EMOTION_COLUMNS}}
    commit_by_hand(output, "s", pa.table(columns))


def binary_labels(output: Path, reverse: bool) -> pd.DataFrame:
    votes = majority_votes(pd.read_csv(BINARY, dtype=str))
    images = sorted(votes["path"].unique())
    table = votes.pivot(index="path", columns="emotion", values="positive").reindex(images)
    scores = {c: (table[c].fillna(False).to_numpy(dtype=float) * (-1 if reverse else 1)) for c in table.columns}
    write_labels(output, [f"binary/{i}" for i in images], scores)  # keys carry a prefix: the rule finds the id
    return votes


@pytest.mark.parametrize("reverse,expected", [(False, 1.0), (True, 0.0)])
def test_binary_auc_known_answers(tmp_path, reverse, expected):
    votes = binary_labels(tmp_path, reverse)
    result, table = run_evaluate(EvaluateConfig(labels=str(tmp_path), annotations=str(BINARY)))
    assert result["format"] == "binary" and result["images_matched"] == 2000
    scored = [r for r in result["per_emotion"] if r["auc"] is not None]
    assert len(scored) >= 30
    assert all(r["auc"] == expected for r in scored)
    assert result["summary"]["mean_auc"] == expected
    helpless = next(r for r in result["per_emotion"] if r["emotion"] == "helplessness")  # annotated as Hopelessness
    assert helpless["images"] == len(votes[votes["emotion"] == "helplessness"])
    assert table.startswith("| emotion | images | positives | auc |")
    assert json.loads((tmp_path / "stats" / "evaluate-binary.json").read_text())["summary"]["mean_auc"] == expected


def hq_file(path: Path, images: int, seed: int = 0) -> tuple[list[str], dict[str, np.ndarray]]:
    """hq.csv in the release format; returns the image ids and the expert median per emotion."""
    rng = np.random.default_rng(seed)
    emotions = EMOTIONS[:6]
    ids = [f"img_{i:04d}" for i in range(images)]
    rows, ratings = [], {e: np.zeros((3, images)) for e in emotions}
    for expert in range(3):
        for i, image in enumerate(ids):
            values = {e: int(np.clip(rng.integers(0, 8) + (i % 3), 0, 7)) for e in emotions}
            for e in emotions:
                ratings[e][expert, i] = values[e]
            annotations = {f"Some Family|{e}": v for e, v in values.items()}
            rows.append(
                {"image": image, "annotator": f"expert-{expert}", "annotations": repr(annotations), "human": True}
            )
    rows.append({"image": ids[0], "annotator": "gpt", "annotations": repr({f"X|{emotions[0]}": 7}), "human": False})
    pd.DataFrame(rows).to_csv(path, index=False)
    from emonet_batch.taxonomy import column_name

    return ids, {column_name(e): np.median(r, axis=0) for e, r in ratings.items()}


def test_hq_model_equal_to_the_median_gives_rho_one(tmp_path):
    ids, medians = hq_file(tmp_path / "hq.csv", 60)
    write_labels(tmp_path / "out", [f"hq/{i}" for i in ids], medians)
    result, table = run_evaluate(
        EvaluateConfig(labels=str(tmp_path / "out"), annotations=str(tmp_path / "hq.csv"), bootstrap=50)
    )
    assert result["format"] == "hq"
    summary = result["summary"]
    assert summary["emotions"] == 6 and summary["mean_spearman"] == pytest.approx(1.0)
    assert summary["mean_spearman_ci95"] == pytest.approx([1.0, 1.0])
    assert result["experts"] == 3  # the non-human row is ignored
    assert -1 <= summary["mean_kappa_model_expert"] <= 1 and -1 <= summary["mean_kappa_human_human"] <= 1
    assert summary["mean_krippendorff_alpha"] < 1
    assert "mean_spearman 1.000" in table


def test_key_rule():
    known = {"00042", "00100"}
    assert annotation_ids(["binary/00042", "img-100.jpg", "00042", "nothing"], known, None) == [
        "00042",
        "00100",
        "00042",
        None,
    ]
    assert annotation_ids(["a-7-b"], {"0007"}, r"a-(\d+)-b") == ["7"]
    # img2dataset's keys and unpadded numbers match by value
    assert annotation_ids(["00000/000000042", "100", "img_00101"], known, None) == ["00042", "00100", None]


def test_cli_evaluate_and_offline_hub(tmp_path, capsys, monkeypatch):
    binary_labels(tmp_path, reverse=False)
    assert main(["evaluate", "--labels", str(tmp_path), "--annotations", str(BINARY), "--format", "binary"]) == 0
    out = capsys.readouterr().out
    assert "| anger |" in out and "scored images matched an annotated image" in out
    assert main(["evaluate", "--labels", str(tmp_path), "--annotations", str(BINARY), "--format", "hq"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("emonet-batch: error: --format hq needs the columns image, annotations") and err.count("\n") == 1
    )
    for pattern, message in (("(", "is not a regular expression: missing )"), ("x", "has no group: put ( )")):
        args = ["evaluate", "--labels", str(tmp_path), "--annotations", str(BINARY), "--key-pattern", pattern]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"emonet-batch: error: --key-pattern {pattern!r} {message}") and err.count("\n") == 1
    assert main(["evaluate", "--labels", str(tmp_path), "--annotations", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"emonet-batch: error: annotations are a directory, not a CSV file: {tmp_path}\n"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert main(["evaluate", "--labels", str(tmp_path), "--annotations", "laion/emonet-face-binary"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot load the dataset laion/emonet-face-binary" in err


def test_an_unreachable_hub_fails_at_once(tmp_path, capsys, monkeypatch):
    """Online mode with no network: one probe, one line, no retry storm."""
    import time

    from huggingface_hub import constants

    binary_labels(tmp_path, reverse=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # a hub that refuses, network or not
    started = time.perf_counter()
    assert main(["evaluate", "--labels", str(tmp_path), "--annotations", "laion/emonet-face-binary"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("emonet-batch: error: cannot reach the dataset laion/emonet-face-binary")
        and err.count("\n") == 1
    )
    assert time.perf_counter() - started < 5

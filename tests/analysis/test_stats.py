"""Stats against pandas on the same label files (no Ray: label files are written directly)."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emonet_batch.analysis.stats import compute_stats
from emonet_batch.errors import UsageError
from emonet_batch.taxonomy import EMOTION_COLUMNS, EMOTIONS, HEAD_COLUMNS, family_of

from ..shardkit import commit_by_hand


def write_labels(output, shards: int, rows: int, seed: int = 0) -> pd.DataFrame:
    """Label files in the job's layout with random scores, plus commit records for all but none."""
    rng = np.random.default_rng(seed)
    frames = []
    for s in range(shards):
        shard = f"shard-{s:05d}"
        frame = pd.DataFrame(
            rng.normal(1.0, 1.5, size=(rows, len(HEAD_COLUMNS))).astype(np.float32), columns=list(HEAD_COLUMNS)
        )
        frame.insert(0, "key", [f"{shard}-{i}" for i in range(rows)])
        frame.insert(1, "shard", shard)
        frame["top_emotion"] = [EMOTIONS[i] for i in np.argmax(frame[list(EMOTION_COLUMNS)].to_numpy(), axis=1)]
        frame["top_prob"] = np.float32(0.1)
        frame["gender"] = rng.choice(["female", "male"], size=rows)
        frame["age"] = rng.integers(18, 80, size=rows)
        frames.append(frame)
        commit_by_hand(output, shard, pa.Table.from_pandas(frame, preserve_index=False), samples=rows)
    return pd.concat(frames, ignore_index=True)


def test_stats_match_pandas(tmp_path):
    frame = write_labels(tmp_path, shards=3, rows=700)
    # an uncommitted shard's labels are ignored
    write_labels(tmp_path / "stray", 1, 5)
    (tmp_path / "stray" / "labels" / "shard-00000.parquet").rename(tmp_path / "labels" / "uncommitted.parquet")
    stats = compute_stats(str(tmp_path))
    assert stats["run"]["label_rows"] == 2100 and stats["run"]["label_files"] == 3
    heads = {row["head"]: row for row in stats["heads"]}
    for head in ("amusement", "jealousy_envy", "valence"):
        column = frame[head].astype(np.float64)
        got = heads[head]
        assert got["count"] == 2100
        assert got["mean"] == pytest.approx(column.mean(), abs=1e-9)
        assert got["std"] == pytest.approx(column.std(), abs=1e-9)
        assert (got["min"], got["max"]) == pytest.approx((column.min(), column.max()))
        for q in (5, 25, 50, 75, 95):
            assert got[f"p{q}"] == pytest.approx(column.quantile(q / 100), abs=2e-3)
        assert sum(stats["histograms"][head]) == 2100
    counts = frame["top_emotion"].value_counts()
    assert {e: v["count"] for e, v in stats["top_emotion"].items()} == counts.to_dict()
    families = frame["top_emotion"].map(family_of).value_counts()
    assert {f: v["count"] for f, v in stats["top_family"].items()} == families.to_dict()
    want = frame[list(EMOTION_COLUMNS)].astype(np.float64).corr().to_numpy()
    np.testing.assert_allclose(np.array(stats["correlation"]["matrix"]), want, atol=1e-9)
    assert stats["metadata_fields"] == ["gender", "age"]

    groups = {(g["field"], g["group"]): g for g in stats["groups"]}
    female = frame[frame["gender"] == "female"]
    assert groups[("gender", "female")]["count"] == len(female)
    assert groups[("gender", "female")]["anger"] == pytest.approx(female["anger"].astype(np.float64).mean())
    thirties = frame[(frame["age"] >= 30) & (frame["age"] <= 39)]
    assert groups[("age", "30-39")]["count"] == len(thirties)
    shares = {(g["field"], g["group"], g["top_emotion"]): g["share"] for g in stats["group_top_emotion"]}
    male = frame[frame["gender"] == "male"]
    top = male["top_emotion"].value_counts(normalize=True)
    assert shares[("gender", "male", top.index[0])] == pytest.approx(top.iloc[0])

    written = json.loads((tmp_path / "stats" / "stats.json").read_text())
    assert written["heads"] == stats["heads"]
    tables = {p.stem for p in (tmp_path / "stats").glob("*.parquet")}
    assert tables == {"heads", "histograms", "top_emotions", "correlation", "groups", "group_top_emotions"}
    assert pq.read_table(tmp_path / "stats" / "heads.parquet").num_rows == 44


def test_stats_need_committed_shards(tmp_path):
    with pytest.raises(UsageError, match="no committed shards"):
        compute_stats(str(tmp_path))


def test_a_damaged_manifest_is_one_line_and_a_damaged_stats_file_is_computed_again(tmp_path):
    from emonet_batch.analysis.report import saved_stats
    from emonet_batch.job.config import StorageOptions
    from emonet_batch.job.storage import filesystem

    write_labels(tmp_path, shards=1, rows=10)
    for damaged, problem in (("{half a manifest", "Expecting property name"), ("[1]", "not a JSON object")):
        (tmp_path / "manifest.json").write_text(damaged)
        with pytest.raises(UsageError, match=rf"manifest\.json cannot be read \({problem}.*\); the score command"):
            compute_stats(str(tmp_path))
    (tmp_path / "manifest.json").unlink()
    fs, output = filesystem(str(tmp_path), StorageOptions())
    assert saved_stats(fs, output) is None  # none yet: the report computes them
    compute_stats(str(tmp_path))
    assert saved_stats(fs, output)["run"]["label_rows"] == 10
    for damaged in ("{half a stats file", "[1]"):
        (tmp_path / "stats" / "stats.json").write_text(damaged)
        assert saved_stats(fs, output) is None  # damaged: computed again, as when there is none


def test_label_files_that_disagree_are_refused(tmp_path):
    frame = write_labels(tmp_path, shards=1, rows=10)
    commit_by_hand(tmp_path, "shard-00001", pa.Table.from_pandas(frame.drop(columns=["age"]), preserve_index=False))
    with pytest.raises(UsageError, match=r"label files disagree: .* differ in columns \(age\)"):
        compute_stats(str(tmp_path))


def test_a_field_with_too_many_values_is_not_grouped(tmp_path):
    frame = write_labels(tmp_path, shards=2, rows=40)
    frame["caption"] = [f"caption {i}" for i in range(len(frame))]
    commit_by_hand(tmp_path, "shard-00000", pa.Table.from_pandas(frame.iloc[:40], preserve_index=False))
    commit_by_hand(tmp_path, "shard-00001", pa.Table.from_pandas(frame.iloc[40:], preserve_index=False))
    stats = compute_stats(str(tmp_path))
    assert stats["metadata_skipped"] == {"caption": 80} and "caption" not in stats["metadata_fields"]
    assert {g["field"] for g in stats["groups"]} == {"gender", "age"}


def test_a_numeric_field_with_nan_and_infinity_is_grouped(tmp_path):
    # json.dumps writes NaN for a pandas gap, and json.loads reads it back: such metadata reaches the label files
    frame = write_labels(tmp_path, shards=1, rows=40)
    frame["age"] = frame["age"].astype(np.float64)
    frame.loc[:9, "age"], frame.loc[10:11, "age"], frame.loc[12, "age"] = np.nan, np.inf, -np.inf
    commit_by_hand(tmp_path, "shard-00000", pa.Table.from_pandas(frame, preserve_index=False))
    groups = {g["group"]: g["count"] for g in compute_stats(str(tmp_path))["groups"] if g["field"] == "age"}
    assert (groups["(missing)"], groups["inf"], groups["-inf"]) == (10, 2, 1)
    assert sum(groups.values()) == 40


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    from emonet_batch.analysis import stats
    from emonet_batch.cli import main

    write_labels(tmp_path, shards=1, rows=5)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stats, "compute_stats", interrupted)
    assert main(["stats", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "emonet-batch: interrupted\n"

"""Folders as real tools write them, and shards damaged for good, end to end on the embedded Ray runtime."""

import contextlib
import functools
import http.server
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from emonet_batch.cli import main
from emonet_batch.devtools.samples import demo_samples, encode
from emonet_batch.job.inputs import shard_id

from ..shardkit import good_shards, manifest, shard_outcomes, truncate
from .test_score import score


@contextlib.contextmanager
def serving(directory: Path):
    """An HTTP server on loopback for the files in `directory`; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def img2dataset_folder(tmp_path: Path) -> Path:
    """A real img2dataset run over faces served on loopback: 6 faces, one URL that 404s and one that is no image,
    in shards of 4; captions and one additional column saved."""
    import pyarrow as pa

    www = tmp_path / "www"
    www.mkdir()
    for index, (key, members) in enumerate(demo_samples(6, size=96)):
        (www / f"face{index}.jpg").write_bytes(members["jpg"])
    (www / "notes.jpg").write_text("not an image")
    with serving(www) as base:
        urls = [f"{base}/face{i}.jpg" for i in range(6)] + [f"{base}/missing.jpg", f"{base}/notes.jpg"]
        table = pa.table({"url": urls, "caption": [f"caption {i}" for i in range(8)], "source": ["web"] * 8})
        pq.write_table(table, tmp_path / "urls.parquet")
        command = [str(Path(sys.executable).with_name("img2dataset")), "--url_list", str(tmp_path / "urls.parquet")]
        command += ["--input_format", "parquet", "--url_col", "url", "--caption_col", "caption"]
        command += ["--save_additional_columns", '["source"]', "--output_format", "webdataset"]
        command += ["--output_folder", str(tmp_path / "downloaded"), "--processes_count", "1", "--thread_count", "4"]
        command += ["--resize_mode", "no", "--number_sample_per_shard", "4", "--enable_wandb", "False"]
        subprocess.run(command, check=True, capture_output=True, timeout=300)
    return tmp_path / "downloaded"


@pytest.mark.slow
def test_an_img2dataset_folder_is_scored_with_its_metadata(ray_runtime, tiny_models, tmp_path, capsys):
    folder = img2dataset_folder(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [
        "00000.parquet", "00000.tar", "00000_stats.json", "00001.parquet", "00001.tar", "00001_stats.json",
    ]  # fmt: skip
    downloaded = [row for p in sorted(folder.glob("*.parquet")) for row in pq.read_table(p).to_pylist()]
    assert sum(row["status"] == "success" for row in downloaded) == 6

    out = tmp_path / "out"
    code = main(
        ["score", str(folder), "--output", str(out), "--model", str(tiny_models["small"]), "--progress", "off"]
        + ["--meta-fields", "caption,source,url", "--no-report"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "left out 2 Parquet files without an image column (img2dataset's metadata files?)" in captured.out
    labels = pq.read_table(out / "labels").to_pylist()
    assert sorted(row["key"] for row in labels) == sorted(r["key"] for r in downloaded if r["status"] == "success")
    assert all(row["caption"].startswith("caption ") and row["source"] == "web" for row in labels)
    assert {row["url"].rsplit("/", 1)[1] for row in labels} == {f"face{i}.jpg" for i in range(6)}
    assert manifest(out)["input_shards"] == 2 and len(shard_outcomes(out)) == 2

    # a metadata file named as an input is refused before anything is written
    assert main(["score", str(folder / "00000.parquet"), "--output", str(tmp_path / "named")]
                + ["--model", str(tiny_models["small"])]) == 2  # fmt: skip
    assert "00000.parquet holds no image column" in capsys.readouterr().err
    assert not (tmp_path / "named").exists()


def test_a_damaged_shard_is_accepted_only_on_purpose(ray_runtime, tiny_models, tmp_path):
    (good,) = good_shards(tmp_path / "in", shards=1, per_shard=6)
    cut = tmp_path / "in" / "cut.tar"
    shutil.copy(good, cut)
    truncate(cut, 0.55)
    cut_id = shard_id(str(cut))

    result = score(tmp_path, tiny_models["small"], [good, cut])
    assert result.exit_code == 1 and shard_outcomes(tmp_path / "out")[cut_id]["status"] == "incomplete"
    assert shard_outcomes(tmp_path / "out")[cut_id]["retryable"] is False
    assert "a rerun reads the same bytes" in result.exit_reason and "rerun to retry" not in result.exit_reason

    # the truncated error row counts as an error row; with 6-sample shards it is a high rate
    result = score(tmp_path, tiny_models["small"], [good, cut], accept_truncated=True, max_error_rate=0.5)
    assert result.exit_code == 0, result.exit_reason
    outcome = shard_outcomes(tmp_path / "out")[cut_id]
    assert outcome["status"] == "complete" and outcome["error_types"] == {"truncated": 1}
    assert 0 < outcome["labels"] < 6 and outcome["samples"] == outcome["labels"] + 1
    (error,) = pq.read_table(tmp_path / "out" / "errors" / f"{cut_id}.parquet").to_pylist()
    assert error["error_type"] == "truncated" and f"after {outcome['labels']} samples" in error["message"]
    assert manifest(tmp_path / "out")["accepted_truncated"] == [cut_id]
    assert any(w.startswith(f"{cut_id}: accepted truncated") for w in result.warnings)


def test_a_tar_that_ends_elsewhere_on_a_second_read_is_not_accepted(tmp_path, monkeypatch):
    """A file still being written: the second read ends after more samples. No Ray."""
    from emonet_batch.job import read
    from emonet_batch.job.config import StorageOptions
    from emonet_batch.job.inputs import make_shard

    (good,) = good_shards(tmp_path / "in", shards=1, per_shard=6)
    whole = good.read_bytes()
    truncate(good, 0.4)
    reads = []
    opened = read.filesystem

    def growing(url, storage):
        reads.append(url)
        if len(reads) == 2:  # the upload goes on between the two reads
            good.write_bytes(whole[: int(len(whole) * 0.8)])
        return opened(url, storage)

    monkeypatch.setattr(read, "filesystem", growing)
    rows = list(read.shard_rows(make_shard(str(good)), StorageOptions(), accept_truncated=True))
    end = rows[-1]
    assert end["status"] == "incomplete" and "a second read gave" in end["reason"] and end["retryable"]
    assert not [row for row in rows if row.get("error_type") == "truncated"]

"""Folders as real tools write them, and shards damaged for good, end to end on the embedded Ray runtime."""

import contextlib
import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from emonet_batch.cli import main
from emonet_batch.devtools.samples import demo_samples
from emonet_batch.job.config import StorageOptions
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
    for index, (_, members) in enumerate(demo_samples(6, size=96)):
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


class StallingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the shards of its folder; after its first request (preflight's look at the head), `silent.tar` is
    accepted and answered with nothing, and `trickle.tar` with its headers and then a byte every second."""

    requests: dict[str, int] = {}

    def log_message(self, *args):
        pass

    def send_head(self):
        name = self.path.lstrip("/")
        self.requests[name] = self.requests.get(name, 0) + 1
        if name == "silent.tar" and self.requests[name] > 1:
            time.sleep(30)
            return None
        if name == "trickle.tar" and self.requests[name] > 1 and self.command == "GET":
            size = (Path(self.directory) / name).stat().st_size
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            for _ in range(30):
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(1)
            return None
        return super().send_head()


@pytest.mark.slow
def test_stalled_reads_fail_their_shard_in_bounded_time_and_are_shown_while_they_wait(
    ray_runtime, tiny_models, tmp_path, capsys, monkeypatch
):
    from emonet_batch.run import progress

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.5)
    good_shards(tmp_path / "in", shards=2, per_shard=4)
    for name in ("silent.tar", "trickle.tar"):
        shutil.copy(tmp_path / "in" / "shard-00000.tar", tmp_path / "in" / name)
    handler = functools.partial(StallingHandler, directory=tmp_path / "in")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.handle_error = lambda *args: None  # the client hanging up on a stalled answer
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    names = ("shard-00000.tar", "shard-00001.tar", "silent.tar", "trickle.tar")
    started = time.perf_counter()
    try:
        result = score(tmp_path, tiny_models["small"], [f"{base}/{n}" for n in names], io_timeout=2, progress="log")
    finally:
        server.shutdown()
    took = time.perf_counter() - started
    shown = capsys.readouterr().err
    outcomes = result.outcomes
    by_name = {o.input.rsplit("/", 1)[1]: o for o in outcomes.values()}
    assert [by_name[n].status for n in names] == ["complete", "complete", "failed", "failed"]
    for name in ("silent.tar", "trickle.tar"):
        assert "stalled for 2 s" in by_name[name].reason and by_name[name].retryable
    assert took < 60  # 3 reads of at most 2 s each, 3 s of pauses, the run around them
    waiting = [line for line in shown.splitlines() if "waiting on storage:" in line]
    assert any(by_name["silent.tar"].shard in line for line in waiting), shown[-2000:]
    print(f"stalled shards failed and the run ended in {took:.1f} s (--io-timeout 2); first shown: {waiting[0]}")


@contextlib.contextmanager
def small_disk(path: Path, size: int):
    """A tmpfs of `size` bytes mounted at `path`: a real full disk (where this machine lets the tests mount)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.slow
def test_a_full_disk_stops_the_run_loses_nothing_and_a_rerun_completes(ray_runtime, tiny_models, tmp_path, capsys):
    from emonet_batch.job.storage import filesystem
    from emonet_batch.job.verify import verify_output

    shards = good_shards(tmp_path / "in", shards=12, per_shard=8)
    with small_disk(tmp_path / "disk", 512 << 10) as disk:
        out = disk / "out"
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (440 << 10))  # leaves room for a few shards' files, not for all twelve
        command = ["score", *map(str, shards), "--output", str(out), "--model", str(tiny_models["small"])]
        command += ["--progress", "off", "--no-stats", "--batch-size", "8"]
        code = main(command)
        captured = capsys.readouterr()
        # a logging handler of Ray's that an earlier test's captured stderr was given reports its own failure with a
        # traceback: that is the test harness, not the run
        ours = re.sub(r"--- Logging error ---.*?\nArguments: [^\n]*\n", "", captured.err, flags=re.S)
        assert code == 1 and "Traceback" not in ours
        assert "No space left on device" in captured.out + captured.err
        fs, root = filesystem(str(out), StorageOptions())
        assert verify_output(fs, root) == {}  # every published file is whole and named by its record
        assert not [p for p in out.rglob(".*") if p.is_file() and "labels" in p.parts]
        if (out / "manifest.json").exists():  # when there was room left for it
            failed = [o for o in shard_outcomes(out).values() if o["status"] == "failed"]
            assert failed and all(
                "No space left on device" in o["reason"] or "output is full" in o["reason"] for o in failed
            )
        committed = len(list((out / "labels").glob("*.parquet"))) if (out / "labels").exists() else 0
        assert committed < len(shards)

        filler.unlink()  # space freed: the rerun scores the rest
        assert main(command) == 0, capsys.readouterr().err
        assert len(list((out / "labels").glob("*.parquet"))) == len(shards)
        assert verify_output(fs, root) == {}
        print(f"{committed} of {len(shards)} shards committed before the disk was full; the rerun did the rest")

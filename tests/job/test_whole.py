"""Whole shards staged by the worker that scored all their rows (a fused read): no pieces, the files a commit of the
same rows writes, and the driver's record from the receipt alone. No Ray."""

import json

import numpy as np
import pyarrow as pa

from emonet_batch.job import commit
from emonet_batch.job.collect import ShardCollector
from emonet_batch.job.commit import StagedShard, commit_shard, commit_staged
from emonet_batch.job.config import LabelOptions, StorageOptions
from emonet_batch.job.pieces import rows_table
from emonet_batch.job.rows import COLLECTED_COLUMNS, COMPLETE, END, ERROR, FAILED, SAMPLE, SCORES, ShardEnd
from emonet_batch.job.storage import OutOfSpace, filesystem
from emonet_batch.job.whole import WholeShardWriter

from ..rowkit import ATTEMPT, SHARD, batch, read_block

OPTIONS = LabelOptions(meta_fields=("age",))


def scored_block(model, rows: list[tuple]) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """A scored block of (kind, shard, seq) rows with metadata and error fields, and the model's outputs."""
    columns = batch(rows, heads=len(model.heads))
    columns["meta"] = np.array([json.dumps({"age": 30 + seq}) for _, _, seq in rows], dtype=object)
    for name in ("stage", "error_type", "message"):
        columns[name] = np.array(["decode" if kind == ERROR else None for kind, _, _ in rows], dtype=object)
    heads = np.arange(len(model.heads), dtype=np.float32)
    scores = np.stack([heads + seq for _, _, seq in rows])  # a row's scores by its seq, whichever block holds it
    return read_block(columns), {SCORES: scores}


def test_a_worker_that_scored_a_whole_shard_stages_the_files_a_commit_of_its_rows_writes(model, tmp_path):
    fs, output = filesystem(str(tmp_path / "out"), StorageOptions())
    writer = WholeShardWriter(fs, output, ATTEMPT, "host:1:gpu=-", model, OPTIONS)
    collector = ShardCollector()
    first = writer.write(*scored_block(model, [(SAMPLE, "s", 0), (ERROR, "s", 1)])).to_pylist()
    assert [(r["piece"], r["staged"], r["samples"], r["errors"]) for r in first] == [(None, None, [0, 1], [1, 2])]
    assert collector.add(first) == [] and not list((tmp_path / "out").rglob("*.*"))  # held, nothing written
    # the task retried after its actor was lost sends its first rows again, then the rest and the end row
    assert collector.add(writer.write(*scored_block(model, [(SAMPLE, "s", 0)])).to_pylist()) == []
    last = writer.write(*scored_block(model, [(SAMPLE, "s", 2), (END, "s", 3)])).to_pylist()
    assert collector.add(last) == ["s"] and last[0]["assemble_cpu_s"] > 0
    pieces, end, staged = collector.pop("s")
    assert pieces == [] and end == ShardEnd(3, COMPLETE) and collector.images_by_worker == {"host:1:gpu=-": 2}
    staged = StagedShard.from_json(staged, SHARD)
    outcome = commit_staged(fs, output, SHARD, staged, ATTEMPT)
    assert (outcome.input, outcome.samples, outcome.labels, outcome.errors) == (SHARD.display_url, 3, 2, 1)
    assert outcome.error_types == {"decode": 1} and writer.held == {}

    one_process = tmp_path / "one"
    block, outputs = scored_block(model, [(SAMPLE, "s", 0), (ERROR, "s", 1), (SAMPLE, "s", 2)])
    columns = {name: block[name].to_numpy(zero_copy_only=False) for name in COLLECTED_COLUMNS if name != SCORES}
    one_fs, one_output = filesystem(str(one_process), StorageOptions())
    commit_shard(
        one_fs, one_output, SHARD, rows_table(columns | outputs), ShardEnd(3, COMPLETE), model, OPTIONS, ATTEMPT
    )
    for name in staged.files:
        assert (tmp_path / "out" / name).read_bytes() == (one_process / name).read_bytes(), name


def test_a_shard_the_worker_cannot_stage_for_want_of_space_fails_and_says_the_output_is_full(
    model, tmp_path, monkeypatch
):
    def full(fs, path, data):
        raise OutOfSpace(f"no space left for {path}")

    monkeypatch.setattr(commit, "write_bytes", full)
    fs, output = filesystem(str(tmp_path / "out"), StorageOptions())
    writer = WholeShardWriter(fs, output, ATTEMPT, "host:1:gpu=-", model, OPTIONS)
    (receipt,) = writer.write(*scored_block(model, [(SAMPLE, "s", 0), (END, "s", 1)])).to_pylist()
    staged = StagedShard.from_json(receipt["staged"], SHARD)
    assert staged.output_full and staged.files == {} and staged.outcome.status == FAILED
    assert staged.outcome.reason.startswith("commit failed: no space left")

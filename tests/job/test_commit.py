"""The commit step: label and error files staged, then the create-only record. No Ray."""

import json

import pyarrow.parquet as pq
import pytest

from emonet_batch.job.commit import assemble_shard, commit_shard
from emonet_batch.job.config import LabelOptions, StorageOptions
from emonet_batch.job.layout import (
    ERROR_COLUMNS,
    FIXED_LABEL_COLUMNS,
    commit_file,
    error_file,
    incomplete_file,
    label_file,
    staged_file,
)
from emonet_batch.job.rows import (
    COMPLETE,
    ERROR,
    INCOMPLETE,
    SAMPLE,
    ShardEnd,
)
from emonet_batch.job.storage import filesystem

from ..rowkit import ATTEMPT, SHARD, shard_rows, whole_shard_pieces


def test_commit_writes_labels_errors_then_the_create_only_record(model, tmp_path):
    fs, output = filesystem(str(tmp_path), StorageOptions())
    rows = shard_rows(model, [SAMPLE, ERROR, SAMPLE])
    options = LabelOptions(meta_fields=("age",))
    outcome = commit_shard(fs, output, SHARD, rows, ShardEnd(3, COMPLETE), model, options, ATTEMPT)
    assert (outcome.samples, outcome.labels, outcome.errors, outcome.status) == (3, 2, 1, COMPLETE)
    labels = pq.read_table(tmp_path / label_file("s"))
    assert labels.column_names[:2] == list(FIXED_LABEL_COLUMNS[:2]) and labels.column("key").to_pylist() == ["k0", "k2"]
    assert labels.column("age").to_pylist() == [30, 32]
    assert pq.read_table(tmp_path / error_file("s")).column_names == list(ERROR_COLUMNS)
    record = json.loads((tmp_path / commit_file("s")).read_text())
    assert record["model_id"] == model.model_id and set(record["files"]) == {label_file("s"), error_file("s")}
    again = commit_shard(fs, output, SHARD, rows, ShardEnd(3, COMPLETE), model, options, ATTEMPT)
    assert again.reason.startswith("already committed by another run")


def test_an_incomplete_shard_writes_files_but_no_record(model, tmp_path):
    fs, output = filesystem(str(tmp_path), StorageOptions())
    rows = shard_rows(model, [SAMPLE, SAMPLE, SAMPLE])
    outcome = commit_shard(fs, output, SHARD, rows, ShardEnd(3, INCOMPLETE, "cut"), model, LabelOptions(), ATTEMPT)
    assert outcome.status == INCOMPLETE and outcome.reason == "cut"
    assert (tmp_path / incomplete_file(label_file("s"))).exists()  # kept for inspection, where readers don't look
    assert not (tmp_path / label_file("s")).exists() and not (tmp_path / commit_file("s")).exists()


def test_commit_refuses_rows_that_do_not_add_up(model, tmp_path):
    fs, output = filesystem(str(tmp_path), StorageOptions())
    with pytest.raises(AssertionError, match="4 samples read but 3 labels"):
        rows = shard_rows(model, [SAMPLE] * 3)
        commit_shard(fs, output, SHARD, rows, ShardEnd(4, COMPLETE), model, LabelOptions(), ATTEMPT)


def race(model, directory, contenders: dict[str, LabelOptions]) -> dict:
    """Commit one shard from several attempts at once (threads released together); their outcomes."""
    import threading

    fs, output = filesystem(str(directory), StorageOptions())
    start, outcomes = threading.Barrier(len(contenders)), {}

    def attempt(name, options):
        rows = shard_rows(model, [SAMPLE, ERROR, SAMPLE])
        start.wait()
        outcomes[name] = commit_shard(fs, output, SHARD, rows, ShardEnd(3, COMPLETE), model, options, name)

    threads = [threading.Thread(target=attempt, args=item) for item in contenders.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_two_attempts_racing_on_one_shard_leave_one_commit_whose_hashes_hold(model, tmp_path):
    """Any interleaving: one record, and the published bytes are the ones it names (the attempts' bytes differ)."""
    from emonet_batch.job.verify import verify_output

    for round_ in range(12):
        directory = tmp_path / str(round_)
        outcomes = race(model, directory, {"plain": LabelOptions(), "centered": LabelOptions(centered=True)})
        assert sorted(o.reason is None for o in outcomes.values()) == [False, True]
        assert verify_output(*filesystem(str(directory), StorageOptions())) == {}
        winner = json.loads((directory / commit_file("s")).read_text())["attempt"]
        assert outcomes[winner].reason is None


def test_an_assembly_run_again_finds_its_pieces_and_stages_the_same_bytes(model, tmp_path):
    # Ray runs an assembly task again when its node is lost before the driver has its result
    fs, output = filesystem(str(tmp_path), StorageOptions())
    pieces, end = whole_shard_pieces(fs, output, model, "s")
    first = assemble_shard(fs, output, SHARD, pieces, end, model, LabelOptions(), ATTEMPT)
    staged = (tmp_path / staged_file(ATTEMPT, label_file("s"))).read_bytes()
    again = assemble_shard(fs, output, SHARD, pieces, end, model, LabelOptions(), ATTEMPT)
    assert again == first and (first.outcome.status, first.outcome.labels) == (COMPLETE, 2)
    assert (tmp_path / staged_file(ATTEMPT, label_file("s"))).read_bytes() == staged

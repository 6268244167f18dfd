"""Commit records read through a checkpoint (job/commitlog.py): only the records written since are read from their
files, and whatever the checkpoint says, the records decide. Local files, no Ray."""

import json
import os

import pytest

from emonet_batch.job.commitlog import read_records, write_checkpoint
from emonet_batch.job.config import StorageOptions
from emonet_batch.job.layout import CHECKPOINTS, COMMITS
from emonet_batch.job.storage import create_only, filesystem


@pytest.fixture
def output(tmp_path):
    (tmp_path / COMMITS).mkdir()
    return tmp_path


def commit(output, shard: str, **fields) -> None:
    assert create_only(
        filesystem(str(output), StorageOptions())[0],
        str(output / COMMITS / f"{shard}.json"),
        json.dumps({"shard": shard, "samples": 1, **fields}).encode(),
    )


def reading(output, monkeypatch):
    """read_records, and the record files it read (not the checkpoint)."""
    fs, path = filesystem(str(output), StorageOptions())
    read = []
    cat = fs.cat
    monkeypatch.setattr(fs, "cat", lambda paths, **kw: read.extend(paths) or cat(paths, **kw))
    records, unreadable, warnings = read_records(fs, path)
    return records, sorted(p.rsplit("/", 1)[-1] for p in read), unreadable, warnings


def test_a_resume_reads_only_the_records_written_after_the_checkpoint(output, monkeypatch):
    for i in range(5):
        commit(output, f"s{i}")
    records, read, _, _ = reading(output, monkeypatch)
    assert sorted(records) == [f"s{i}" for i in range(5)] and len(read) == 5  # no checkpoint: every record
    write_checkpoint(*filesystem(str(output), StorageOptions()))
    commit(output, "s5", samples=7)
    records, read, unreadable, warnings = reading(output, monkeypatch)
    assert read == ["s5.json"] and records["s5"]["samples"] == 7 and len(records) == 6
    assert unreadable == [] and warnings == []


def test_records_removed_or_written_again_since_the_checkpoint_decide(output, monkeypatch):
    for i in range(3):
        commit(output, f"s{i}")
    write_checkpoint(*filesystem(str(output), StorageOptions()))
    os.remove(output / COMMITS / "s0.json")  # --repair removed it
    os.remove(output / COMMITS / "s1.json")
    commit(output, "s1", samples=99)  # and a later run committed it again
    records, read, _, _ = reading(output, monkeypatch)
    assert sorted(records) == ["s1", "s2"] and records["s1"]["samples"] == 99 and read == ["s1.json"]


def test_an_unreadable_checkpoint_is_ignored_with_a_warning(output, monkeypatch):
    for i in range(3):
        commit(output, f"s{i}")
    fs, path = filesystem(str(output), StorageOptions())
    good = write_checkpoint(fs, path)
    bad = output / CHECKPOINTS / "99999999T999999-deadbeef.parquet"  # the newest by name
    bad.write_bytes(b"not parquet")
    records, read, _, warnings = reading(output, monkeypatch)
    assert len(records) == 3 and read == []  # the older checkpoint that reads
    assert warnings == [
        f"commit checkpoint {bad.name} cannot be read (Parquet magic bytes not found in footer. "
        "Either the file is corrupted or this is not a parquet file.); ignored"
    ] or (len(warnings) == 1 and warnings[0].startswith(f"commit checkpoint {bad.name} cannot be read"))
    os.remove(good)
    records, read, _, warnings = reading(output, monkeypatch)
    assert len(records) == 3 and len(read) == 3 and len(warnings) == 1


def test_checkpoints_written_at_once_each_stand_and_old_ones_go(output, monkeypatch):
    for i in range(4):
        commit(output, f"s{i}")
    fs, path = filesystem(str(output), StorageOptions())
    names = {write_checkpoint(fs, path) for _ in range(5)}
    assert len(names) == 5  # a name of its own each: two runs never write one file
    kept = sorted(os.listdir(output / CHECKPOINTS))
    assert len(kept) == 3 and {n.rsplit("/", 1)[-1] for n in names} >= set(kept)
    records, read, _, _ = reading(output, monkeypatch)
    assert len(records) == 4 and read == []

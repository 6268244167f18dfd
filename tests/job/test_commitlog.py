"""Commit records read through a checkpoint and the commit log (job/commitlog.py): a resume reads only the records
the log names since the checkpoint, without listing `_commits/`; verify's full reading lets the records decide.
Local files, no Ray."""

import json
import os
import time

import pytest

from emonet_batch.job.commitlog import checkpoint_interval, log_change, read_records, write_checkpoint
from emonet_batch.job.config import StorageOptions
from emonet_batch.job.layout import CHECKPOINTS, COMMITS
from emonet_batch.job.storage import create_only, filesystem
from emonet_batch.run.resume import remove_record


@pytest.fixture
def output(tmp_path):
    (tmp_path / COMMITS).mkdir()
    return tmp_path


def commit(output, shard: str, **fields) -> None:
    """A record created as the job creates one: its log entry first."""
    log_change(filesystem(str(output), StorageOptions())[0], str(output), shard)
    assert create_only(
        filesystem(str(output), StorageOptions())[0],
        str(output / COMMITS / f"{shard}.json"),
        json.dumps({"shard": shard, "samples": 1, **fields}).encode(),
    )


def reading(output, monkeypatch, full: bool = False):
    """read_records, and the record files it read (not the checkpoint); a resume's reading never lists _commits/."""
    fs, path = filesystem(str(output), StorageOptions())
    read, listed = [], []
    cat, ls = fs.cat, fs.ls
    monkeypatch.setattr(fs, "cat", lambda paths, **kw: read.extend(paths) or cat(paths, **kw))
    monkeypatch.setattr(fs, "ls", lambda folder, **kw: listed.append(folder) or ls(folder, **kw))
    found = read_records(fs, path, full=full)
    if not full and (output / CHECKPOINTS).exists() and not found.warnings:  # a checkpoint that reads
        assert not any(folder.rstrip("/").endswith(COMMITS) for folder in listed), listed
    return found.records, sorted(p.rsplit("/", 1)[-1] for p in read), found.unreadable, found.warnings


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
    fs, path = filesystem(str(output), StorageOptions())
    remove_record(fs, path, "s0")  # --repair removed it
    remove_record(fs, path, "s1")
    commit(output, "s1", samples=99)  # and a later run committed it again
    for full in (False, True):
        records, read, _, _ = reading(output, monkeypatch, full)
        assert sorted(records) == ["s1", "s2"] and records["s1"]["samples"] == 99 and "s1.json" in read


def test_verify_finds_a_record_removed_by_hand_that_the_log_does_not_name(output, monkeypatch):
    for i in range(3):
        commit(output, f"s{i}")
    write_checkpoint(*filesystem(str(output), StorageOptions()))
    os.remove(output / COMMITS / "s0.json")
    records, read, _, _ = reading(output, monkeypatch, full=True)
    assert sorted(records) == ["s1", "s2"] and read == []


def test_a_commit_under_way_when_a_checkpoint_was_written_is_read_once_its_record_exists(output, monkeypatch):
    commit(output, "s0")
    fs, path = filesystem(str(output), StorageOptions())
    log_change(fs, path, "s1")  # its entry, not yet its record
    write_checkpoint(fs, path)
    assert sorted(reading(output, monkeypatch)[0]) == ["s0"]
    assert create_only(fs, str(output / COMMITS / "s1.json"), json.dumps({"shard": "s1", "samples": 1}).encode())
    records, read, _, _ = reading(output, monkeypatch)
    assert sorted(records) == ["s0", "s1"] and read == ["s1.json"]
    write_checkpoint(fs, path)  # taken in now: nothing left to read
    records, read, _, _ = reading(output, monkeypatch)
    assert sorted(records) == ["s0", "s1"] and read == []


def test_a_stale_checkpoint_is_brought_up_to_date_by_the_log(output, monkeypatch):
    fs, path = filesystem(str(output), StorageOptions())
    commit(output, "s0")
    write_checkpoint(fs, path)
    time.sleep(0.01)
    for i in range(1, 4):
        commit(output, f"s{i}")
    remove_record(fs, path, "s0")
    records, read, _, _ = reading(output, monkeypatch)
    assert sorted(records) == ["s1", "s2", "s3"] and read == ["s0.json", "s1.json", "s2.json", "s3.json"]


def test_commits_and_checkpoints_at_once_lose_no_record(output, monkeypatch):
    """Two writers commit and checkpoint in turns at once: every reader afterwards finds every record."""
    import threading

    fs, path = filesystem(str(output), StorageOptions())
    start = threading.Barrier(2)

    def writer(name):
        start.wait()
        for i in range(20):
            commit(output, f"{name}{i}")
            if i % 3 == 0:
                write_checkpoint(fs, path)

    threads = [threading.Thread(target=writer, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = sorted(f"{n}{i}" for n in "ab" for i in range(20))
    assert sorted(reading(output, monkeypatch)[0]) == expected
    write_checkpoint(fs, path)
    records, read, _, _ = reading(output, monkeypatch)
    assert sorted(records) == expected and read == []


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


def test_checkpoints_of_a_large_output_are_rewritten_less_often():
    assert checkpoint_interval(0) == checkpoint_interval(100_000) == 1000
    assert checkpoint_interval(1_000_000) == 10_000 and checkpoint_interval(5_000_000) == 50_000

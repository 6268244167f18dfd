"""The driver's commits on threads (run/commits.py): every shard committed once and recorded, a storage failure a failed
shard, and each checkpoint written with no commit under way. Local files, no Ray."""

import hashlib

import pytest

from emonet_batch.job.commit import ShardOutcome, StagedShard
from emonet_batch.job.commitlog import read_records
from emonet_batch.job.config import StorageOptions
from emonet_batch.job.inputs import make_shard
from emonet_batch.job.layout import label_file, staged_file
from emonet_batch.job.storage import StorageError, filesystem, write_bytes
from emonet_batch.run import commits
from emonet_batch.run.progress import Counters

ATTEMPT = "20261203T000000-0000"


def staged(fs, output: str, index: int):
    """A shard whose label file is staged under ATTEMPT, as an assembly leaves it."""
    shard = make_shard(f"/corpus/shard-{index:04d}.tar")
    data = f"labels of {index}".encode()
    write_bytes(fs, f"{output}/{staged_file(ATTEMPT, label_file(shard.shard_id))}", data)
    outcome = ShardOutcome(shard.shard_id, shard.display_url, "complete", samples=1, labels=1)
    return shard, StagedShard(outcome, {label_file(shard.shard_id): hashlib.sha256(data).hexdigest()}, "model")


def test_shards_committed_on_threads_are_each_recorded_once_and_checkpoints_wait_for_them(tmp_path, monkeypatch):
    fs, output = filesystem(str(tmp_path), StorageOptions())
    checkpoints = []
    real_checkpoint = commits.write_checkpoint

    def checkpoint(fs, output):  # every record it takes in is published already
        records = read_records(fs, output, full=True).records
        assert all(fs.exists(f"{output}/{label_file(shard)}") for shard in records)
        assert not committer.running
        checkpoints.append(len(records))
        return real_checkpoint(fs, output)

    monkeypatch.setattr(commits, "checkpoint_interval", lambda records: 10)
    monkeypatch.setattr(commits, "write_checkpoint", checkpoint)
    outcomes, counters = {}, Counters()
    committer = commits.Committer(fs, output, ATTEMPT, outcomes, counters)
    for first in range(0, 45, 5):
        committer.submit([staged(fs, output, i) for i in range(first, first + 5)])
        committer.collect()
    committer.close()
    assert counters.shards_done == 45 and len(outcomes) == 45
    assert all(o.status == "complete" for o in outcomes.values())
    assert len(read_records(fs, output, full=True).records) == 45
    # one after each tenth commit, unless a wait for the commits under way went past the next tenth too
    assert 2 <= len(checkpoints) <= 4 and checkpoints == sorted(checkpoints) and committer.warnings == []


def test_a_commit_the_storage_refuses_is_a_failed_shard_and_a_bug_is_raised(tmp_path, monkeypatch):
    fs, output = filesystem(str(tmp_path), StorageOptions())
    shards = [staged(fs, output, i) for i in range(3)]
    refused, buggy = shards[0][0].shard_id, shards[1][0].shard_id
    real_commit = commits.commit_staged

    def commit_or_fail(fs, output, shard, *args):
        if shard.shard_id == refused:
            raise StorageError("cannot write: the disk is full")
        if shard.shard_id == buggy:
            raise KeyError("a bug")
        return real_commit(fs, output, shard, *args)

    monkeypatch.setattr(commits, "commit_staged", commit_or_fail)
    outcomes = {}
    committer = commits.Committer(fs, output, ATTEMPT, outcomes, Counters())
    committer.submit(shards)
    with pytest.raises(KeyError, match="a bug"):
        committer.close()
    assert outcomes[refused].status == "failed" and "the disk is full" in outcomes[refused].reason
    assert outcomes[shards[2][0].shard_id].status == "complete" and buggy not in outcomes

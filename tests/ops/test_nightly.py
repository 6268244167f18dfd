"""Nightly's choice of shards. No Ray."""

from emonet_batch.job.config import StorageOptions
from emonet_batch.job.layout import (
    commit_file,
)
from emonet_batch.job.storage import filesystem
from emonet_batch.ops.nightly import committed_everywhere, new_shards

from ..rowkit import shards


def test_nightly_scores_only_what_no_partition_committed(tmp_path):
    for day, shard in (("2026-11-24", "a"), ("2026-11-25", "b")):
        (tmp_path / f"dt={day}" / "_commits").mkdir(parents=True)
        (tmp_path / f"dt={day}" / commit_file(shard)).write_text("{}")
    (tmp_path / "not-a-partition" / "_commits").mkdir(parents=True)
    (tmp_path / "not-a-partition" / commit_file("c")).write_text("{}")
    fs, root = filesystem(str(tmp_path), StorageOptions())
    done = committed_everywhere(fs, root)
    assert done == {"a", "b"}
    assert [s.shard_id for s in new_shards(shards("a", "b", "c", "d"), done)] == ["c", "d"]
    assert committed_everywhere(fs, root + "/missing") == set()

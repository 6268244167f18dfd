"""The shard collector and the pieces it follows: receipts in, whole shards out. No Ray."""

import os

import numpy as np
import pytest

from emonet_batch.job.collect import SeqCoverage, ShardCollector
from emonet_batch.job.config import StorageOptions
from emonet_batch.job.pieces import PieceWriter, read_rows, seq_ranges
from emonet_batch.job.rows import (
    COMPLETE,
    END,
    ERROR,
    SAMPLE,
    ShardEnd,
)
from emonet_batch.job.storage import StorageError, filesystem

from ..rowkit import ATTEMPT, scored_pieces, unfinished


@pytest.fixture
def scored(tmp_path):
    """An inference worker's piece writer: scored blocks of (kind, shard, seq) rows in, receipts out."""
    fs, output = filesystem(str(tmp_path / "out"), StorageOptions())
    writer = PieceWriter(fs, output, ATTEMPT, "host:1:gpu=-")

    def receipts(rows: list[tuple]) -> list[dict]:
        return scored_pieces(writer, rows)

    receipts.rows = lambda pieces: read_rows(fs, output, pieces).to_pydict()
    return receipts


def test_a_shard_is_whole_when_its_end_and_all_its_samples_arrived(scored):
    c = ShardCollector()
    assert c.add(scored([(SAMPLE, "a", 0), (SAMPLE, "b", 0)])) == []
    assert c.add(scored([(SAMPLE, "a", 1), (END, "a", 2)])) == ["a"]
    pieces, end, _ = c.pop("a")
    assert end == ShardEnd(2, COMPLETE) and list(scored.rows(pieces)["seq"]) == [0, 1]
    assert unfinished(c) == ["b"]  # b never got its end row
    assert c.images_by_worker == {"host:1:gpu=-": 3}


def test_the_end_row_may_arrive_before_the_samples(scored):
    c = ShardCollector()
    assert c.add(scored([(END, "a", 2)])) == []
    assert c.add(scored([(SAMPLE, "a", 1)])) == []
    assert c.add(scored([(ERROR, "a", 0)])) == ["a"]
    pieces, _, _ = c.pop("a")
    assert list(scored.rows(pieces)["kind"]) == [ERROR, SAMPLE] and unfinished(c) == []


def test_a_row_delivered_twice_is_kept_once(scored):
    c = ShardCollector()
    c.add(scored([(SAMPLE, "a", 0), (SAMPLE, "a", 1)]))
    assert c.add(scored([(SAMPLE, "a", 1), (END, "a", 2)])) == ["a"]  # a re-run task sent seq 1 again
    pieces, _, _ = c.pop("a")
    assert list(scored.rows(pieces)["seq"]) == [0, 1] and c.images_by_worker["host:1:gpu=-"] == 2
    assert c.add(scored([(SAMPLE, "a", 0)])) == [] and unfinished(c) == []  # after the hand-over: ignored


def test_a_count_that_never_matches_never_commits(scored):
    c = ShardCollector()
    assert c.add(scored([(SAMPLE, "a", 0), (END, "a", 3)])) == []
    assert c.add(scored([(SAMPLE, "a", 0)])) == []  # the same row again does not make up the count
    assert unfinished(c) == ["a"]


def test_a_piece_whose_bytes_changed_is_never_read(scored, tmp_path):
    c = ShardCollector()
    c.add(scored([(SAMPLE, "a", 0), (END, "a", 1)]))
    pieces, _, _ = c.pop("a")
    with open(tmp_path / "out" / pieces[0].path, "r+b") as piece:
        piece.seek(-20, os.SEEK_END)
        piece.write(b"x")
    with pytest.raises(StorageError, match="not the bytes their worker wrote"):
        scored.rows(pieces)


@pytest.mark.parametrize(
    "seqs, ranges", [([], []), ([3], [3, 4]), ([0, 1, 2, 5, 6, 9], [0, 3, 5, 7, 9, 10]), ([4, 2, 3, 3], [2, 5])]
)
def test_a_receipt_names_its_rows_as_ranges(seqs, ranges):
    assert seq_ranges(np.array(seqs, dtype=np.int64)) == ranges


def test_the_coverage_of_a_shard_counts_each_seq_once():
    coverage = SeqCoverage()
    assert [coverage.add(*r) for r in [(0, 5), (3, 8), (10, 12), (8, 10), (0, 12), (20, 21)]] == [5, 3, 2, 2, 0, 1]
    assert coverage.count == 13 and (coverage.starts, coverage.stops) == ([0, 20], [12, 21])

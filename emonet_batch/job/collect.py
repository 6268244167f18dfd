"""Collect stage: follow each shard's receipts (pieces.py) until the shard is whole, then hand its pieces over.

A shard is whole when its `end` row has been reported and the pieces hold as many distinct rows (by `seq`) as the
end row counts. Receipts may arrive in any order and, when Ray re-runs a task after losing a node or an actor, a
row may be in two pieces: a piece that adds no new row is not read, and the assembly keeps each `seq` once, so a
shard is committed exactly once with each sample once. Only receipts reach this step, never rows: its memory is a
few ranges per shard in flight.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Any

from .pieces import ASSEMBLE_CPU, WRITE_CPU, PieceRef, receipt_end
from .rows import CPU_COLUMNS, ShardEnd

#: The stages whose CPU seconds the receipts carry (their rows' stages, the writing of the pieces, and the staging
#: of a whole shard where it was scored).
RECEIPT_CPU = {**CPU_COLUMNS, "write": WRITE_CPU, "assemble": ASSEMBLE_CPU}


class SeqCoverage:
    """The distinct `seq` values seen of a shard, as sorted disjoint [start, stop) ranges."""

    def __init__(self):
        self.starts: list[int] = []
        self.stops: list[int] = []
        self.count = 0

    def add(self, start: int, stop: int) -> int:
        """Cover [start, stop); return how many of its values were new."""
        first = bisect.bisect_left(self.stops, start)  # ranges from `first` to `last` overlap or touch it
        last = bisect.bisect_right(self.starts, stop)
        if first < last:
            start, stop = min(start, self.starts[first]), max(stop, self.stops[last - 1])
        new = (stop - start) - sum(self.stops[i] - self.starts[i] for i in range(first, last))
        self.starts[first:last], self.stops[first:last] = [start], [stop]
        self.count += new
        return new


class ShardCollector:
    def __init__(self):
        self.pieces: dict[str, list[PieceRef]] = defaultdict(list)
        self.covered: dict[str, SeqCoverage] = defaultdict(SeqCoverage)
        self.ends: dict[str, ShardEnd] = {}
        self.staged: dict[str, str] = {}  # shards staged by the worker that scored them (job/whole.py)
        self.done: set[str] = set()
        self.images_by_worker: dict[str, int] = defaultdict(int)
        self.samples_seen = 0  # distinct sample rows so far, over every shard
        self.cpu_seconds: dict[str, float] = dict.fromkeys(RECEIPT_CPU, 0.0)  # by stage, rows seen twice included

    def add(self, receipts: list[dict[str, Any]]) -> list[str]:
        """Take a batch of receipts; return the shards they made whole."""
        ready = []
        for receipt in receipts:
            for stage, column in RECEIPT_CPU.items():
                self.cpu_seconds[stage] += receipt[column] or 0.0
            shard = receipt["shard"]
            if shard in self.done:  # a retried batch's rows of a shard already handed over
                continue
            end = receipt_end(receipt)
            if end is not None:
                self.ends[shard] = end
            if receipt["staged"] is not None:
                self.staged[shard] = receipt["staged"]
            new_samples = self._cover(shard, receipt["samples"])
            if new_samples + self._cover(shard, receipt["errors"]) and receipt["piece"] is not None:
                self.pieces[shard].append(PieceRef(receipt["piece"], receipt["sha256"]))
            self.images_by_worker[receipt["worker"]] += new_samples
            self.samples_seen += new_samples
            if shard in self.ends and self.covered[shard].count == self.ends[shard].count and shard not in ready:
                ready.append(shard)
        return ready

    def _cover(self, shard: str, ranges: list[int]) -> int:
        coverage = self.covered[shard]
        return sum(coverage.add(ranges[i], ranges[i + 1]) for i in range(0, len(ranges), 2))

    def pop(self, shard: str) -> tuple[list[PieceRef], ShardEnd, str | None]:
        """A whole shard's pieces (in arrival order), its end, and the shard as the worker that scored all of it
        staged it (commit.StagedShard.to_json; None when its pieces are to be assembled); later receipts of the
        shard are ignored."""
        self.done.add(shard)
        self.covered.pop(shard, None)
        return self.pieces.pop(shard, []), self.ends.pop(shard), self.staged.pop(shard, None)

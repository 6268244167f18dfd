"""Collect stage: gather each shard's streamed rows until the shard is whole, then hand it to the commit.

A shard is whole when its `end` row has arrived and as many distinct samples (by `seq`) as the end row
counts. Rows may arrive in any order and, when Ray re-runs a task after losing a node, more than once:
a repeated `seq` is dropped, so a shard is committed exactly once with each sample once.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from .rows import CPU_COLUMNS, END, SAMPLE, WORKER, ShardEnd


class ShardCollector:
    def __init__(self, columns: list[str]):
        self.columns = columns
        self.parts: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)
        self.seen: dict[str, set[int]] = defaultdict(set)
        self.ends: dict[str, ShardEnd] = {}
        self.images_by_worker: dict[str, int] = defaultdict(int)
        self.samples_seen = 0  # distinct sample rows so far, over every shard
        self.cpu_seconds: dict[str, float] = dict.fromkeys(CPU_COLUMNS, 0.0)  # by stage, rows seen twice included

    def add(self, batch: dict[str, np.ndarray]) -> list[str]:
        """Take a batch; return the shards it made whole."""
        ready = []
        for stage, column in CPU_COLUMNS.items():
            if column in batch:
                self.cpu_seconds[stage] += float(np.nansum(batch[column]))
        shards, kinds = batch["shard"], batch["kind"]
        for shard in np.unique(shards):
            mask = shards == shard
            is_end = mask & (kinds == END)
            if is_end.any():
                row = np.flatnonzero(is_end)[0]
                self.ends[shard] = ShardEnd(
                    int(batch["count"][row]), str(batch["status"][row]), _text(batch["reason"][row])
                )
                mask &= ~is_end
            mask &= self._first_time(shard, batch["seq"], mask)
            if mask.any():
                self.parts[shard].append({name: batch[name][mask] for name in self.columns})
                for worker in batch[WORKER][mask & (kinds == SAMPLE)]:
                    self.images_by_worker[str(worker)] += 1
                    self.samples_seen += 1
            if shard in self.ends and len(self.seen[shard]) == self.ends[shard].count:
                ready.append(str(shard))
        return ready

    def _first_time(self, shard: str, seqs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Rows not seen before."""
        seen = self.seen[shard]
        fresh = np.zeros(len(seqs), dtype=bool)
        for i in np.flatnonzero(mask):
            seq = int(seqs[i])
            if seq not in seen:
                seen.add(seq)
                fresh[i] = True
        return fresh

    def pop(self, shard: str) -> tuple[dict[str, np.ndarray], ShardEnd]:
        """A whole shard's rows (in arrival order) and its end; the collector forgets the shard."""
        parts = self.parts.pop(shard, [])
        self.seen.pop(shard, None)
        rows = {
            name: np.concatenate([p[name] for p in parts]) if parts else np.empty(0, dtype=object)
            for name in self.columns
        }
        return rows, self.ends.pop(shard)

    def unfinished(self) -> list[str]:
        """Shards with rows or an end row but not yet whole (after the stream ended: a bug, never a loss)."""
        return sorted(set(self.parts) | set(self.ends))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None

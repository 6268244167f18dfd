"""Whole shards staged where they were scored: when one inference worker scores every row of a shard (a CPU
rescore, whose read Ray Data fuses into the actors: a shard is one task of one actor), it holds the shard's scored
rows until the end row and stages the shard's files itself (commit.stage_shard), instead of writing pieces that an
assembly task reads back. The receipts are those of pieces.py without a piece; the one of the block with the end
row carries the staged shard, and the driver creates its record as for an assembled one.

A retried task (its actor lost) scores the shard again from its first row, in another actor or after this one's
rows; each `seq` is staged once, and the staged files are the same bytes whichever attempt wrote them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np
import pyarrow as pa

from ..model.record import ModelInfo
from .commit import empty_rows, failed_staging, stage_shard
from .config import LabelOptions
from .pieces import ASSEMBLE_CPU, PieceWriter, distinct_rows, piece_table, receipt_end
from .storage import StorageError


class WholeShardWriter(PieceWriter):
    """Holds each shard's scored rows until its end row, then stages its files with `labels` (see the module's
    text). The rows of a shard wait here for no longer than its task runs."""

    def __init__(self, fs, output: str, attempt: str, worker: str, info: ModelInfo, labels: LabelOptions):
        super().__init__(fs, output, attempt, worker)
        self.info, self.labels = info, labels
        self.held: dict[str, list[pa.Table]] = defaultdict(list)

    def keep(self, receipt: dict[str, Any], block: pa.Table, outputs: dict[str, np.ndarray], data: np.ndarray) -> None:
        shard = receipt["shard"]
        self.held[shard].append(piece_table(block, outputs, data))
        end = receipt_end(receipt)
        if end is None:
            return
        started = time.thread_time()
        rows = distinct_rows(self.held.pop(shard)) or empty_rows(self.info, self.labels.embedding)
        # no input name: the actor never sees the shard's URL; the driver adds it (StagedShard.from_json)
        try:
            staged = stage_shard(self.fs, self.output, shard, "", rows, end, self.info, self.labels, self.attempt)
        except StorageError as exc:
            staged = failed_staging(shard, "", end, exc)
        receipt["staged"] = staged.to_json()
        receipt[ASSEMBLE_CPU] = time.thread_time() - started

"""Rows as the pipeline makes them, for the tests of the job core."""

import json

import numpy as np
import pyarrow as pa

from emonet_batch.job.collect import ShardCollector
from emonet_batch.job.inputs import Shard
from emonet_batch.job.pieces import PieceRef, PieceWriter, rows_table
from emonet_batch.job.rows import (
    COLLECTED_COLUMNS,
    COMPLETE,
    END,
    END_COLUMNS,
    ERROR,
    READ_SCHEMA,
    SAMPLE,
    SCORES,
    ShardEnd,
)

HEADS = 3
ATTEMPT = "attempt-1"
SHARD = Shard("in/s.tar", "s", "tar")


def batch(rows: list[tuple], heads: int = HEADS) -> dict[str, np.ndarray]:
    """A result batch as the edge streams it; rows are (kind, shard, seq) with an `end` row's seq its count."""
    count = len(rows)
    columns = {name: np.full(count, None, dtype=object) for name in (*COLLECTED_COLUMNS, *END_COLUMNS)}
    columns["seq"] = np.array([-1 if kind == END else seq for kind, _, seq in rows], dtype=np.int64)
    columns["kind"] = np.array([kind for kind, _, _ in rows], dtype=object)
    columns["shard"] = np.array([shard for _, shard, _ in rows], dtype=object)
    columns["key"] = np.array([f"k{seq}" for _, _, seq in rows], dtype=object)
    columns["count"] = np.array([seq if kind == END else 0 for kind, _, seq in rows], dtype=np.int64)
    columns["status"] = np.array([COMPLETE if kind == END else None for kind, _, _ in rows], dtype=object)
    columns["scores"] = np.arange(count * heads, dtype=np.float32).reshape(count, heads)
    columns["worker"] = np.full(count, "host:1:gpu=-", dtype=object)
    return columns


def read_block(columns: dict[str, np.ndarray]) -> pa.Table:
    """A batch's row protocol columns as the block the infer stage gets (READ_SCHEMA's types, those it has)."""
    return pa.table({f.name: pa.array(columns[f.name], f.type) for f in READ_SCHEMA if f.name in columns})


def scored_pieces(writer: PieceWriter, rows: list[tuple], heads: int = HEADS) -> list[dict]:
    """The receipts of a scored block of (kind, shard, seq) rows, its rows written as pieces by `writer`."""
    columns = batch(rows, heads)
    return writer.write(read_block(columns), {SCORES: columns[SCORES]}).to_pylist()


def whole_shard_pieces(fs, output: str, model, shard: str) -> tuple[list[PieceRef], ShardEnd]:
    """The pieces of a shard of two samples scored in two blocks, as the collector hands them to its assembly."""
    writer, collector = PieceWriter(fs, output, ATTEMPT, "host:1:gpu=-"), ShardCollector()
    for rows in ([(SAMPLE, shard, 0)], [(SAMPLE, shard, 1), (END, shard, 2)]):
        collector.add(scored_pieces(writer, rows, len(model.heads)))
    pieces, end, _ = collector.pop(shard)
    return pieces, end


def unfinished(collector: ShardCollector) -> list[str]:
    """Shards with rows or an end row but not yet whole."""
    return sorted((set(collector.covered) | set(collector.ends)) - collector.done)


def shard_rows(model, kinds: list[str]) -> pa.Table:
    """A shard's rows as the commit takes them (pieces read back), in another order than they were read."""
    rows = batch([(kind, "s", seq) for seq, kind in enumerate(kinds)], heads=len(model.heads))
    rows["meta"] = np.array([json.dumps({"age": 30 + i}) for i in range(len(kinds))], dtype=object)
    for name in ("stage", "error_type", "message"):
        rows[name] = np.array(["decode" if k == ERROR else None for k in kinds], dtype=object)
    order = np.array([2, 0, 1])  # arrival order differs from read order
    return rows_table({name: rows[name][order] for name in COLLECTED_COLUMNS})


def shards(*ids: str) -> list[Shard]:
    return [Shard(f"in/{i}.tar", i, "tar") for i in ids]

"""The row protocol: what flows from stage to stage, declared once.

A shard becomes a stream of rows, each of one kind, each carrying `kind`, `shard` (the shard id) and `seq`:

    sample  read a sample's bytes:        key, image (bytes), meta (JSON text or null)
    error   a sample that failed a stage: key, stage, error_type, message
    end     the shard's last row:         count (samples read), status (complete | incomplete | failed),
                                          reason (why not complete; null when it is), retryable (whether a
                                          rerun may complete it: false when it would read the same bytes
                                          again, a damaged or foreign file); seq is -1

The stages add and drop columns (each declares them next to its function as StageColumns; the plan checks that
they fit together when it is built, check_stages):

    read    every column of READ_SCHEMA
    decode  + pixels (uint8 [N, S, S, 3], zeros where there is no image), - image; a sample that cannot be
            decoded becomes an error row (stage "decode")
    infer   + scores (float32 [N, heads], NaN on other rows), + embedding (float32 [N, D], only when the
            labels keep it), + worker (which actor scored the batch), - pixels

A rescore (job/embeddings.py) reads a scored output instead: its sample rows carry the stored `embedding` (float32
[N, D]) where these carry `image`, nothing is decoded, and infer drops the embedding (and adds it back only when
the new labels keep it).

Each stage also adds its CPU seconds (read_cpu_s, decode_cpu_s, infer_cpu_s), spread evenly over the rows it
handled in one call, so that the receipts can tell the driver what each stage cost a run.

The inference worker writes COLLECTED_COLUMNS (plus `embedding` when asked) of the sample and error rows as pieces
(pieces.py); once the receipts show a shard's `end` row and all of its `count` rows, its pieces are assembled into
label and error files (commit.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import EmonetError

SAMPLE, ERROR, END = "sample", "error", "end"
#: The status an `end` row gives its shard.
COMPLETE, INCOMPLETE, FAILED = "complete", "incomplete", "failed"

#: Rows as the read stage writes them (null where a kind has no value).
READ_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("shard", pa.string()),
        ("seq", pa.int64()),
        ("key", pa.string()),
        ("image", pa.binary()),
        ("meta", pa.string()),
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("message", pa.string()),
        ("count", pa.int64()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("retryable", pa.bool_()),
        ("read_cpu_s", pa.float64()),
    ]
)

#: Columns the stages add.
PIXELS, SCORES, EMBEDDING, WORKER = "pixels", "scores", "embedding", "worker"
READ_CPU, DECODE_CPU, INFER_CPU = "read_cpu_s", "decode_cpu_s", "infer_cpu_s"


@dataclass(frozen=True)
class StageColumns:
    """What a stage takes from the rows it is given, and what it gives and drops."""

    takes: tuple[str, ...]
    gives: tuple[str, ...] = ()
    drops: tuple[str, ...] = ()


def check_stages(first: Iterable[str], stages: list[tuple[str, StageColumns]]) -> set[str]:
    """Follow the columns from `first` (what the read stage gives) through the stages in order: a stage that takes a
    column no stage before it gives is an error, raised when the plan is built, before Ray starts. The columns at
    the end."""
    columns = set(first)
    for name, stage in stages:
        missing = sorted(set(stage.takes) - columns)
        if missing:
            raise EmonetError(
                f"the plan's stages do not fit: {name} takes {', '.join(missing)}, given by no stage before"
            )
        columns = (columns - set(stage.drops)) | set(stage.gives)
    return columns


#: The CPU-seconds columns, by stage name.
CPU_COLUMNS = {"read": READ_CPU, "decode": DECODE_CPU, "infer": INFER_CPU}
#: Arrow types of the row columns (the model's inputs and outputs, arrays of more than one dimension, are typed at
#: the edge, as Ray's tensor columns).
ROW_TYPES = (
    {field.name: field.type for field in READ_SCHEMA}
    | {WORKER: pa.string()}
    | {name: pa.float64() for name in CPU_COLUMNS.values()}
)


def typed_rows(batch: dict[str, np.ndarray]) -> pa.Table:
    """Row columns (numpy) as an Arrow table with the protocol's types, NaN and None as null. Left to infer types
    from values, a batch of samples only would give `status` the type null and `count` double, and the next batch
    with an end row a string and an int64: blocks that Ray Data cannot merge."""
    return pa.table({name: pa.array(values, type=ROW_TYPES[name], from_pandas=True) for name, values in batch.items()})


def cpu_share(seconds: float, rows: int) -> np.ndarray:
    """A call's CPU seconds spread over its rows, as a stage's CPU column."""
    return np.full(rows, seconds / rows if rows else 0.0)


#: The columns only an `end` row has (a receipt carries them as end_<name>).
END_COLUMNS = ("count", "status", "reason", "retryable")
#: What a piece keeps of each row for the commit step (the embedding only when the labels keep it).
COLLECTED_COLUMNS = ("kind", "shard", "seq", "key", "meta", "stage", "error_type", "message", SCORES)


def collected_columns(with_embedding: bool) -> list[str]:
    return [*COLLECTED_COLUMNS, *((EMBEDDING,) if with_embedding else ())]


def piece_columns(with_embedding: bool) -> StageColumns:
    """The piece writer's columns (pieces.py): what it keeps of each row, and the `end` row's."""
    return StageColumns(takes=(*collected_columns(with_embedding), *END_COLUMNS))


def sample_row(shard: str, seq: int, key: str, image: bytes, meta: str | None) -> dict[str, Any]:
    return {"kind": SAMPLE, "shard": shard, "seq": seq, "key": key, "image": image, "meta": meta}


def error_row(shard: str, seq: int, key: str, stage: str, error_type: str, message: str) -> dict[str, Any]:
    return {
        "kind": ERROR,
        "shard": shard,
        "seq": seq,
        "key": key,
        "stage": stage,
        "error_type": error_type,
        "message": message,
    }


def end_row(shard: str, count: int, status: str, reason: str | None = None, retryable: bool = True) -> dict[str, Any]:
    return {
        "kind": END, "shard": shard, "seq": -1, "count": count, "status": status, "reason": reason,
        "retryable": retryable,
    }  # fmt: skip


@dataclass(frozen=True)
class ShardEnd:
    """What a shard's `end` row says."""

    count: int
    status: str
    reason: str | None = None
    retryable: bool = True

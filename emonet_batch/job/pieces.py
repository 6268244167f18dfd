"""Pieces: the scored rows of a block, written where they were scored, so that no row travels to the driver.

The inference worker splits each block it scored by shard and writes the rows the commit needs
(rows.collected_columns) as one Arrow IPC file per shard, a piece, under its attempt's staging
(layout.piece_file). The driver gets a receipt per piece instead of the rows: the shard, which `seq` ranges of
samples and of error rows the piece holds, the shard's end row when the block had it, the piece's name and sha256,
the worker and the CPU seconds of the rows' stages. From the receipts alone it knows when a shard is whole
(collect.py); a worker-side step then reads the shard's pieces back (read_rows) and writes its files (commit.py).

Arrow IPC, not Parquet: a piece lives for seconds and is read once, whole, by our own code, so the cheapest format to
write and read wins; its columns are those of the row protocol, with plain fixed-size lists for the scores and the
embedding (no Ray tensor type), so that job code reads them without Ray.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .layout import piece_file
from .rows import (
    CPU_COLUMNS,
    EMBEDDING,
    END,
    END_COLUMNS,
    ERROR,
    ROW_TYPES,
    SAMPLE,
    SCORES,
    ShardEnd,
    collected_columns,
)
from .storage import StorageError, join, write_bytes

#: The CPU seconds of writing the pieces, and of staging a whole shard's files where it was scored (whole.py), in a
#: receipt beside the stages' own (rows.CPU_COLUMNS).
WRITE_CPU = "write_cpu_s"
ASSEMBLE_CPU = "assemble_cpu_s"
#: What the driver receives for each piece: `samples` and `errors` are the `seq` ranges [start, stop) of the
#: piece's sample and error rows, flattened (start, stop, start, stop, ...); `piece` is null when the block held
#: only the shard's end row, or when the worker holds the rows to stage the whole shard itself (whole.py); the end_*
#: fields are null when it did not hold it; `staged` is that worker's staged shard (commit.StagedShard.to_json) on
#: the receipt of the block with the end row.
RECEIPT_SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("piece", pa.string()),
        ("sha256", pa.string()),
        ("samples", pa.list_(pa.int64())),
        ("errors", pa.list_(pa.int64())),
        ("end_count", pa.int64()),
        ("end_status", pa.string()),
        ("end_reason", pa.string()),
        ("end_retryable", pa.bool_()),
        ("worker", pa.string()),
        *[(column, pa.float64()) for column in (*CPU_COLUMNS.values(), WRITE_CPU, ASSEMBLE_CPU)],
        ("staged", pa.string()),
    ]
)
#: The row columns a piece keeps as they came (the model's outputs are added as fixed-size lists).
_ROW_COLUMNS = [name for name in collected_columns(False) if name != SCORES]


@dataclass(frozen=True)
class PieceRef:
    """A piece the assembly of its shard reads: its path under the output and the sha256 its receipt gave."""

    path: str
    sha256: str


class PieceWriter:
    """Writes the pieces of the blocks one inference worker scores (see the module's text)."""

    def __init__(self, fs, output: str, attempt: str, worker: str):
        self.fs, self.output, self.attempt, self.worker = fs, output, attempt, worker

    def write(self, block: pa.Table, outputs: dict[str, np.ndarray]) -> pa.Table:
        """The receipts of a scored block: its row columns as Arrow, the model's `outputs` (scores, the embedding
        when kept, the infer stage's CPU column) as numpy."""
        started = time.thread_time()
        shards = block["shard"].to_numpy(zero_copy_only=False)
        kinds = block["kind"].to_numpy(zero_copy_only=False)
        receipts = []
        for shard in np.unique(shards):
            rows = np.flatnonzero(shards == shard)
            receipt = block_receipt(block, outputs, shard, rows, kinds, self.worker)
            self.keep(receipt, block, outputs, rows[kinds[rows] != END])
            receipts.append(receipt)
        spent = time.thread_time() - started - sum(receipt.get(ASSEMBLE_CPU) or 0.0 for receipt in receipts)
        for receipt in receipts:
            receipt[WRITE_CPU] = spent / len(receipts)
        return pa.Table.from_pylist(receipts, schema=RECEIPT_SCHEMA)

    def keep(self, receipt: dict[str, Any], block: pa.Table, outputs: dict[str, np.ndarray], data: np.ndarray) -> None:
        """Keep a shard's scored `data` rows of the block (not its end row) and say where in `receipt`: here, as a
        piece."""
        if data.size:
            seqs = block["seq"].to_numpy()[data]
            receipt["piece"], receipt["sha256"] = self._write(receipt["shard"], piece_table(block, outputs, data), seqs)

    def _write(self, shard: str, table: pa.Table, seqs: np.ndarray) -> tuple[str, str]:
        data = ipc_bytes(table)
        # a name of its own: a batch retried after a lost actor writes its rows again beside the first piece
        path = piece_file(self.attempt, shard, f"{int(seqs.min()):09d}-{uuid.uuid4().hex[:12]}.arrow")
        write_bytes(self.fs, join(self.output, path), data)
        return path, hashlib.sha256(data).hexdigest()


def piece_table(block: pa.Table, outputs: dict[str, np.ndarray], rows: np.ndarray) -> pa.Table:
    """The collected columns of `rows` of a scored block."""
    indices = pa.array(rows)
    table = block.select(_ROW_COLUMNS).take(indices)
    for name in (SCORES, EMBEDDING):
        if name in outputs:
            table = table.append_column(name, fixed_size_lists(outputs[name][rows]))
    return table


def fixed_size_lists(values: np.ndarray) -> pa.Array:
    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def block_receipt(
    block: pa.Table, outputs: dict[str, np.ndarray], shard: str, rows: np.ndarray, kinds: np.ndarray, worker: str
) -> dict[str, Any]:
    """The receipt of a shard's `rows` of a scored block, but for where its rows are kept: the stages' CPU seconds,
    the end row when the block holds it, and the `seq` ranges of its samples and errors."""
    seqs = block["seq"].to_numpy()
    receipt: dict[str, Any] = {"shard": shard, "worker": worker}
    for column in CPU_COLUMNS.values():
        values = block[column].to_numpy() if column in block.column_names else outputs.get(column)
        receipt[column] = float(np.nansum(values[rows])) if values is not None else 0.0
    ends = rows[kinds[rows] == END]
    if ends.size:
        end = block.slice(int(ends[0]), 1).to_pylist()[0]
        receipt.update({f"end_{name}": end[name] for name in END_COLUMNS})
    data = rows[kinds[rows] != END]
    receipt["samples"] = seq_ranges(seqs[data[kinds[data] == SAMPLE]])
    receipt["errors"] = seq_ranges(seqs[data[kinds[data] == ERROR]])
    return receipt


def seq_ranges(seqs: np.ndarray) -> list[int]:
    """Sorted distinct `seqs` as flattened [start, stop) ranges: a block's rows of a shard are one or few runs."""
    if seqs.size == 0:
        return []
    seqs = np.unique(seqs)
    breaks = np.flatnonzero(np.diff(seqs) != 1)
    starts = np.concatenate([[seqs[0]], seqs[breaks + 1]])
    stops = np.concatenate([seqs[breaks] + 1, [seqs[-1] + 1]])
    return np.column_stack([starts, stops]).reshape(-1).tolist()


def receipt_end(receipt: dict[str, Any]) -> ShardEnd | None:
    if receipt.get("end_count") is None:
        return None
    return ShardEnd(
        int(receipt["end_count"]), receipt["end_status"], receipt["end_reason"], receipt["end_retryable"] is not False
    )


def read_rows(fs, output: str, pieces: list[PieceRef]) -> pa.Table | None:
    """A shard's rows from its pieces, as the commit takes them (None when there are none): each `seq` once (from
    the first piece that has it: a retried batch wrote its rows again), in `seq` order. A piece whose bytes are not
    those its receipt hashed is an error, never used."""
    return distinct_rows([_read_piece(fs, output, piece) for piece in pieces])


def distinct_rows(tables: list[pa.Table]) -> pa.Table | None:
    """Scored rows of a shard, each `seq` once (from the first table that has it), in `seq` order; None when there
    are none."""
    table = pa.concat_tables(tables) if tables else None
    if table is None or table.num_rows == 0:
        return None
    _, first = np.unique(table["seq"].to_numpy(), return_index=True)  # in seq order: the read order
    return table.take(pa.array(first))


def rows_table(columns: dict[str, np.ndarray]) -> pa.Table:
    """Row columns as numpy (scores and embeddings 2-D) as a table of the pieces' columns, as the commit takes
    them."""
    table = pa.table(
        {name: pa.array(columns[name], ROW_TYPES[name], from_pandas=True) for name in _ROW_COLUMNS if name in columns}
    )
    for name in (SCORES, EMBEDDING):
        if name in columns:
            table = table.append_column(name, fixed_size_lists(columns[name]))
    return table


def _read_piece(fs, output: str, piece: PieceRef) -> pa.Table:
    path = join(output, piece.path)
    try:
        with fs.open(path, "rb") as stream:
            data = stream.read()
    except OSError as exc:
        raise StorageError(f"cannot read the scored rows in {piece.path}: {type(exc).__name__}: {exc}") from None
    if hashlib.sha256(data).hexdigest() != piece.sha256:
        raise StorageError(f"the scored rows in {piece.path} are not the bytes their worker wrote")
    return pa.ipc.open_file(pa.py_buffer(data)).read_all()


def remove_pieces(fs, output: str, pieces: list[PieceRef]) -> None:
    """Drop assembled shards' pieces (what a failure here leaves, the run's end removes with its staging)."""
    try:
        fs.rm([join(output, piece.path) for piece in pieces])
    except OSError:
        pass

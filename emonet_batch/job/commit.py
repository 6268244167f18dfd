"""Commit stage: one whole shard's rows -> its create-only _commits/<id>.json, labels/<id>.parquet and
errors/<id>.parquet.

A shard is done exactly when its record exists. The files are staged under a name of this attempt's own (in a
run, by a worker that reads the shard's pieces back: assemble_shard), the record (with their sha256) is created
only if none exists (by the driver: commit_staged), and the files are then moved into place,
so a crash before the record leaves a shard that the next run simply redoes, and a crash after it leaves
staged files the next run publishes (run/resume.py). Files are deterministic (rows in read order, no
timestamps), so the same inputs, model and options give byte-identical label files.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import __version__
from ..model.postprocess import derive, top_emotion
from ..model.record import ModelInfo
from .commitlog import log_change
from .config import LabelOptions
from .inputs import Shard, normalised_location
from .layout import (
    EMBEDDING_COLUMN,
    ERROR_COLUMNS,
    KEY,
    MODEL_ID_METADATA,
    SHARD,
    STAGING,
    TOP_EMOTION,
    TOP_PROB,
    TOWER_ID_METADATA,
    centered_column,
    commit_file,
    error_file,
    incomplete_file,
    label_file,
    softmax_column,
    staged_file,
)
from .pieces import PieceRef, read_rows, rows_table
from .rows import COMPLETE, EMBEDDING, ERROR, FAILED, SAMPLE, SCORES, ShardEnd, collected_columns
from .storage import (
    OutOfSpace,
    StorageError,
    create_only,
    is_local,
    join,
    move,
    parquet_bytes,
    remove_if_present,
    write_bytes,
)

_STRING_DICT = pa.dictionary(pa.int32(), pa.string())


@dataclass
class ShardOutcome:
    """What happened to one shard in a run (or in the run that committed it)."""

    shard: str
    input: str
    status: str  # complete | incomplete | failed
    samples: int = 0
    labels: int = 0
    errors: int = 0
    reason: str | None = None
    retryable: bool = True  # not complete: whether a rerun may complete it (rows.end_row)
    skipped: bool = False  # committed by an earlier run
    error_types: dict[str, int] = field(default_factory=dict)  # error rows by type
    absent_meta: list[str] = field(default_factory=list)  # --meta-fields no sample of the shard has

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "shard"}

    def commit_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.as_dict().items() if k not in ("status", "skipped", "reason", "retryable")}


def label_table(rows: pa.Table, info: ModelInfo, options: LabelOptions) -> pa.Table:
    """Label rows (kind == sample, in read order) -> the labels table of the output layout."""
    count = rows.num_rows
    scores = float_matrix(rows[SCORES], len(info.heads))
    derived = derive(scores, info.heads, info.neutral_means)
    top, top_prob = top_emotion(derived["softmax"], info.heads) if count else ([], np.zeros(0))
    columns: dict[str, pa.Array] = {
        KEY: strings(rows[KEY]),
        SHARD: strings(rows[SHARD]).dictionary_encode(),
    }
    for i, head in enumerate(info.heads):
        columns[head] = pa.array(scores[:, i], pa.float32())
    columns[TOP_EMOTION] = pa.array(list(top), pa.string()).cast(_STRING_DICT)
    columns[TOP_PROB] = pa.array(np.asarray(top_prob, dtype=np.float32), pa.float32())
    if options.centered:
        for i, head in enumerate(info.heads):
            columns[centered_column(head)] = pa.array(derived["centered"][:, i].astype(np.float32), pa.float32())
    if options.softmax:
        for i, head in enumerate(info.heads):
            columns[softmax_column(head)] = pa.array(derived["softmax"][:, i].astype(np.float32), pa.float32())
    if options.embedding:
        flat = pa.array(float_matrix(rows[EMBEDDING], info.embedding_dim).reshape(-1), pa.float32())
        # no element is ever null: Parquet then stores no definition level per float, and a rescore decodes the
        # column in about half the time
        item = pa.field("element", pa.float32(), nullable=False)
        columns[EMBEDDING_COLUMN] = pa.FixedSizeListArray.from_arrays(flat, type=pa.list_(item, info.embedding_dim))
    columns.update(meta_columns(rows["meta"].to_pylist(), options.meta_fields))
    table = pa.table(columns)
    return table.replace_schema_metadata(file_metadata(info))


def float_matrix(column: pa.ChunkedArray, width: int) -> np.ndarray:
    """A fixed-size list column of floats as float32 [N, width]."""
    return pc.list_flatten(column.combine_chunks()).to_numpy().astype(np.float32, copy=False).reshape(-1, width)


def strings(column: pa.ChunkedArray) -> pa.Array:
    return column.cast(pa.string()).combine_chunks()


def meta_columns(meta: list[str | None], fields: tuple[str, ...]) -> dict[str, pa.Array]:
    """Promoted metadata fields as typed columns (strings when a field mixes types, nests or is all null)."""
    # one parse of all the rows as a JSON array: a json.loads a row cost several times the parsing itself
    parsed = json.loads(f"[{','.join(m if isinstance(m, str) else '{}' for m in meta)}]")
    out = {}
    for name in fields:
        values = [record.get(name) if isinstance(record, dict) else None for record in parsed]
        try:
            array = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            array = _as_strings(values)
        if pa.types.is_null(array.type) or pa.types.is_nested(array.type):
            array = _as_strings(values)
        out[name] = array.dictionary_encode() if pa.types.is_string(array.type) else array
    return out


def _as_strings(values: list[Any]) -> pa.Array:
    return pa.array([v if v is None or isinstance(v, str) else json.dumps(v) for v in values], pa.string())


def error_table(rows: pa.Table, info: ModelInfo) -> pa.Table:
    columns = {name: strings(rows[name]) for name in ERROR_COLUMNS}
    for name in ("shard", "stage", "error_type"):
        columns[name] = columns[name].dictionary_encode()
    return pa.table(columns).replace_schema_metadata(file_metadata(info))


def file_metadata(info: ModelInfo) -> dict[str, str]:
    return {
        "emonet_batch.version": __version__,
        MODEL_ID_METADATA: info.model_id,
        TOWER_ID_METADATA: info.tower_id,
        "emonet_batch.heads": json.dumps(list(info.heads)),
        "emonet_batch.precision": info.precision,
    }


ALREADY_COMMITTED = "already committed by another run; its files stand"


@dataclass
class StagedShard:
    """A shard's files written where its commit record will name them: the outcome, and the sha256 of each staged
    file (none when there is nothing to commit: a failed or incomplete shard, or one another run committed)."""

    outcome: ShardOutcome
    files: dict[str, str] = field(default_factory=dict)
    model_id: str | None = None
    output_full: bool = False  # the files could not be written for want of space (storage.OutOfSpace)

    def to_json(self) -> str:
        """As a worker's receipt carries it to the driver (without the input's name, which the driver knows)."""
        fields = asdict(self)
        del fields["outcome"]["input"]
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text: str, shard: Shard) -> StagedShard:
        fields = json.loads(text)
        return cls(**{**fields, "outcome": ShardOutcome(**fields["outcome"], input=shard.display_url)})


def failed_staging(shard_id: str, input_name: str, end: ShardEnd, exc: StorageError) -> StagedShard:
    """A shard whose files could not be staged: failed (a rerun redoes it), and whether the output is full."""
    outcome = ShardOutcome(shard_id, input_name, FAILED, end.count, reason=f"commit failed: {exc}")
    return StagedShard(outcome, output_full=isinstance(exc, OutOfSpace))


def commit_shard(
    fs,
    output: str,
    shard: Shard,
    rows: pa.Table,
    end: ShardEnd,
    info: ModelInfo,
    options: LabelOptions,
    attempt: str,
) -> ShardOutcome:
    """Commit a whole shard's rows in one process (a run stages on the workers and commits on the driver)."""
    staged = stage_shard(fs, output, shard.shard_id, shard.display_url, rows, end, info, options, attempt)
    return commit_staged(fs, output, shard, staged, attempt)


def assemble_shard(
    fs,
    output: str,
    shard: Shard,
    pieces: list[PieceRef],
    end: ShardEnd,
    info: ModelInfo,
    options: LabelOptions,
    attempt: str,
) -> StagedShard:
    """The worker-side step of a run: a whole shard's pieces read back and staged as its files. The pieces stay:
    run again (Ray retries a task whose node was lost before its result reached the driver), it stages the same
    bytes; they go once the driver has the result (edge/assemble.py)."""
    try:
        rows = read_rows(fs, output, pieces) or empty_rows(info, options.embedding)
        return stage_shard(fs, output, shard.shard_id, shard.display_url, rows, end, info, options, attempt)
    except StorageError as exc:
        return failed_staging(shard.shard_id, shard.display_url, end, exc)


def empty_rows(info: ModelInfo, with_embedding: bool) -> pa.Table:
    """The rows of a shard without samples (its pieces hold none)."""
    columns = {name: np.empty(0, dtype=object) for name in collected_columns(with_embedding)}
    columns[SCORES] = np.empty((0, len(info.heads)), np.float32)
    if with_embedding:
        columns[EMBEDDING] = np.empty((0, info.embedding_dim), np.float32)
    return rows_table(columns)


def stage_shard(
    fs,
    output: str,
    shard_id: str,
    input_name: str,
    rows: pa.Table,
    end: ShardEnd,
    info: ModelInfo,
    options: LabelOptions,
    attempt: str,
) -> StagedShard:
    """A whole shard's label and error files, written under this attempt's own staging name, with their sha256 for
    the record (commit_staged). A shard read only in part gets no record: its files go to _incomplete/ for
    inspection. One another run has committed meanwhile is left alone. `input_name` is the input as the outcome
    shows it."""
    rows = rows.sort_by("seq")
    labels = rows.filter(pc.equal(rows["kind"], SAMPLE))
    errors = rows.filter(pc.equal(rows["kind"], ERROR))
    outcome = ShardOutcome(
        shard_id, input_name, end.status, end.count, labels.num_rows, errors.num_rows, end.reason, end.retryable
    )
    outcome.error_types = dict(sorted(Counter(map(str, errors["error_type"].to_pylist())).items()))
    if outcome.labels + outcome.errors != outcome.samples:
        raise AssertionError(
            f"shard {shard_id}: {outcome.samples} samples read but {outcome.labels} labels + {outcome.errors} errors"
        )
    if end.status == FAILED:
        return StagedShard(outcome)
    table = label_table(labels, info, options)
    outcome.absent_meta = [name for name in options.meta_fields if table.column(name).null_count == table.num_rows]
    files = {label_file(shard_id): parquet_bytes(table)}
    if outcome.errors:
        files[error_file(shard_id)] = parquet_bytes(error_table(errors, info))
    if end.status != COMPLETE:
        for name, data in files.items():
            write_bytes(fs, join(output, incomplete_file(name)), data)
        return StagedShard(outcome)
    if fs.exists(join(output, commit_file(shard_id))):  # committed by another run since this one started
        outcome.reason = ALREADY_COMMITTED
        return StagedShard(outcome)
    for name, data in files.items():
        write_bytes(fs, join(output, staged_file(attempt, name)), data)
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    return StagedShard(outcome, hashes, info.model_id)


def commit_staged(fs, output: str, shard: Shard, staged: StagedShard, attempt: str) -> ShardOutcome:
    """The driver's step: the staged shard's commit record, created only if none exists, and then its files moved
    into labels/ and errors/. So no run ever writes over a shard another run committed, and every record's hashes
    describe the bytes that are published."""
    outcome = staged.outcome
    if not staged.files:
        return outcome
    record_path = join(output, commit_file(shard.shard_id))
    record = {
        "shard": shard.shard_id,
        **outcome.commit_fields(),
        "location": normalised_location(shard.url),
        "model_id": staged.model_id,
        "files": staged.files,
        "attempt": attempt,
        "emonet_batch": __version__,
        "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    log_change(fs, output, shard.shard_id)  # before the record: a reader that lists the entry looks for the record
    if not create_only(fs, record_path, json.dumps(record, indent=1).encode()):
        for name in staged.files:
            fs.rm(join(output, staged_file(attempt, name)))
        outcome.reason = ALREADY_COMMITTED
        return outcome
    publish(fs, output, shard.shard_id, record)
    return outcome


def publish(fs, output: str, shard_id: str, record: dict[str, Any]) -> None:
    """Move a committed attempt's staged files into labels/ and errors/ (and drop an error file of an
    earlier attempt that this commit does not name)."""
    for name in record["files"]:
        staged = join(output, staged_file(record["attempt"], name))
        try:
            move(fs, staged, join(output, name))
        except StorageError:
            # a run that found this record unpublished (run/resume.py) may have moved the file first
            if fs.exists(staged) or not fs.exists(join(output, name)):
                raise
    if error_file(shard_id) not in record["files"]:
        remove_if_present(fs, join(output, error_file(shard_id)))


def discard_attempt(fs, output: str, attempt: str) -> None:
    """Remove what is left of an attempt's staging once its run has committed and published all it could (and
    the staging folder itself when no other attempt is in it; object stores have no empty folders)."""
    path = join(output, STAGING, attempt)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    if is_local(fs):
        try:
            os.rmdir(join(output, STAGING))
        except OSError:  # another run's attempt is still there, or it is gone already
            pass

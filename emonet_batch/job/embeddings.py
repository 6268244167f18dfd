"""The read stage of a rescore: an output scored with `--embedding` is the input, and each of its committed shards
becomes the row protocol's rows again, with the stored embedding where score had pixels.

    sample  one per label row: key, meta (the promoted metadata fields as JSON), embedding float32 [D]
    error   one per row of the shard's error file, as the source recorded it (stage, error_type, message)
    end     count = labels + errors; `failed` when the shard's files differ from its record or its tower

Nothing is decoded and no image is read: the heads are all that run. Every file is checked against the source's
commit record before a row is given, so a rescore never spreads a tampered or half-copied label file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import UsageError, first_line
from ..model.record import ModelInfo
from .commitlog import read_records
from .config import EMBEDDINGS, LabelOptions, StorageOptions
from .inputs import Shard, normalised_location
from .layout import (
    EMBEDDING_COLUMN,
    ERROR_COLUMNS,
    KEY,
    LABEL_OPTIONS,
    SHARD,
    TOWER_ID_METADATA,
    commit_file,
    error_file,
    label_file,
)
from .rows import COMPLETE, EMBEDDING, END, ERROR, FAILED, READ_CPU, READ_SCHEMA, SAMPLE, cpu_share
from .storage import NOT_FOUND, filesystem, join, json_object, redact_url
from .verify import recorded_bytes


@dataclass(frozen=True)
class EmbeddingSource:
    """A scored output whose label files hold embeddings, as a rescore reads it (a job/sources.Source): each shard
    in blocks of `rows_per_block` rows."""

    url: str
    tower_id: str
    dim: int
    label_options: dict[str, Any]  # the source's _label_options.json
    storage: StorageOptions
    rows_per_block: int
    input_column: str = EMBEDDING

    @property
    def meta_fields(self) -> tuple[str, ...]:
        return tuple(self.label_options.get("meta_fields") or ())

    @staticmethod
    def check_model(info: ModelInfo, model: str) -> None:
        if not info.heads_only:
            raise UsageError(
                f"model {model} has the tower (images in); rescore reads stored embeddings with a heads-only "
                "model: `emonet-batch export --heads-only`"
            )

    def labels(self, labels: LabelOptions) -> LabelOptions:
        """The source's metadata fields (carried over) and how it decoded; this run's derived columns."""
        return replace(
            labels,
            meta_fields=self.meta_fields,
            exact_decode=bool(self.label_options.get("exact_decode")),
            key_column=self.label_options.get("key_column"),
        )

    def check(self, shards: list[Shard]) -> list[Shard]:
        """Nothing before the run: each shard is checked against the source's commit record as it is read."""
        return []

    def manifest_fields(self) -> dict[str, Any]:
        return {"rescored_from": redact_url(self.url)}

    def row_schema(self) -> pa.Schema:
        return pa.schema([*BLOCK_FIELDS, pa.field(READ_CPU, pa.float64())])

    def input_example(self) -> np.ndarray:
        return np.zeros(self.dim, np.float32)

    def read(self, shard: Shard) -> Iterator[tuple[pa.Table, np.ndarray]]:
        return stored_rows(self, shard.shard_id)


def open_embeddings(
    url: str, output: str, info: ModelInfo, storage: StorageOptions, rows_per_block: int
) -> tuple[EmbeddingSource, list[Shard]]:
    """The source output and its committed shards, or a one-line refusal: no embeddings, another tower, another
    width, not an output, nothing committed, or the new output in the same place."""
    fs, root = filesystem(url, storage)
    display = redact_url(url)
    if normalised_location(url).rstrip("/") == normalised_location(output).rstrip("/"):
        raise UsageError(f"--output is the source {display}: write the new labels to another output")
    try:
        options = json_object(fs, join(root, LABEL_OPTIONS))
    except NOT_FOUND:
        raise UsageError(f"{display} is not an emonet-batch output (it has no {LABEL_OPTIONS})") from None
    except ValueError:
        raise UsageError(f"{display}: {LABEL_OPTIONS} cannot be read") from None
    if not options.get("embedding"):
        raise UsageError(
            f"{display} holds no embeddings (it was scored without --embedding); rescoring reads them, so score "
            "its inputs once with --embedding"
        )
    records = read_records(fs, root).records
    if not records:
        raise UsageError(f"no committed shards under {display} (run `emonet-batch score --embedding` first)")
    tower, dim = stored_tower(fs, root, sorted(records))
    if tower != info.tower_id:
        raise UsageError(
            f"{display} holds embeddings of tower {tower[:12] if tower else '(unrecorded)'}, the model reads those "
            f"of tower {info.tower_id[:12]}: export the heads with the --encoder that scored {display}"
        )
    if dim != info.embedding_dim:
        raise UsageError(f"{display} holds {dim}-d embeddings, the model reads {info.embedding_dim}-d ones")
    # each shard keeps its input's location (the new commit records name it, so the report finds its images)
    shards = [Shard(record["location"], shard_id, EMBEDDINGS) for shard_id, record in sorted(records.items())]
    return EmbeddingSource(url, tower, dim, options, storage, rows_per_block), shards


def stored_tower(fs, root: str, shard_ids: list[str]) -> tuple[str | None, int]:
    """The tower id the label files record and the width of their embedding column, from the footer of the first
    one that can be read (a damaged file fails its own shard when it is read, not the whole run)."""
    problem = ""
    for shard_id in shard_ids:
        try:
            with fs.open(join(root, label_file(shard_id)), "rb") as stream:
                schema = pq.read_schema(stream)
        except (OSError, pa.ArrowException) as exc:
            problem = problem or f"{label_file(shard_id)}: {type(exc).__name__}: {first_line(exc)}"
            continue
        field = schema.field(EMBEDDING_COLUMN) if EMBEDDING_COLUMN in schema.names else None
        return recorded_tower(schema), (field.type.list_size if field is not None else 0)
    raise UsageError(f"no label file of the source can be read ({problem})")


def recorded_tower(schema: pa.Schema) -> str | None:
    """The tower id a label file's metadata names (None when it names none: not a label file of this job)."""
    tower = (schema.metadata or {}).get(TOWER_ID_METADATA.encode())
    return tower.decode() if tower else None


def stored_rows(source: EmbeddingSource, shard_id: str) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """A committed shard of the source as blocks of at most `source.rows_per_block` rows, `end` last: each the row
    protocol's columns (BLOCK_FIELDS) and the rows' embeddings, float32 [N, D] (NaN on rows that are not samples).
    Never an exception: a shard that cannot be used ends `failed` with the reason."""
    started = time.thread_time()
    try:
        labels, errors, samples = checked_tables(source, shard_id)
        rows = pa.concat_tables([sample_rows(labels, source.meta_fields), *([error_rows(errors)] if errors else [])])
        problem, retryable = None, False
        if rows.num_rows != samples:
            problem = f"its record counts {samples} samples, its files hold {rows.num_rows}"
    except Exception as exc:  # whatever the storage backend raises (botocore's credential errors are no OSError)
        # a storage fault may pass; the source's own files stay as they are
        problem, retryable = f"{type(exc).__name__}: {first_line(exc)}", isinstance(exc, OSError)
    if problem:
        failed = end_row(0, FAILED, f"source shard unusable: {problem}", retryable)
        yield block_of(shard_id, failed, 0, np.empty((0, source.dim), np.float32), started)
        return
    embedding = labels.column(EMBEDDING_COLUMN).combine_chunks().flatten().to_numpy().reshape(-1, source.dim)
    size = source.rows_per_block
    for first in range(0, max(rows.num_rows, 1), size):
        block = rows.slice(first, size)
        if first + size >= rows.num_rows:
            block = pa.concat_tables([block, end_row(rows.num_rows, COMPLETE, None, True)])
        yield block_of(shard_id, block, first, embedding[first : first + size], started)
        started = time.thread_time()


def checked_tables(source: EmbeddingSource, shard_id: str) -> tuple[pa.Table, pa.Table, int]:
    """The shard's label and error tables, their bytes checked against its record; and the samples it counts."""
    fs, root = filesystem(source.url, source.storage)
    record = json.loads(fs.cat_file(join(root, commit_file(shard_id))))
    files = record["files"]

    def checked(name: str, columns: tuple[str, ...] | None = None) -> pa.Table:
        file = pq.ParquetFile(pa.BufferReader(recorded_bytes(fs, root, name, files[name])))
        # one thread: each inference actor reads its own shards, one actor a core
        names = [c for c in columns if c in file.schema_arrow.names] if columns else None
        return file.read(columns=names, use_threads=False)

    # only the columns the rows carry: the scores and the columns derived from them are most of a label file's
    labels = checked(label_file(shard_id), (KEY, EMBEDDING_COLUMN, *source.meta_fields))
    tower = recorded_tower(labels.schema)
    if tower != source.tower_id:
        raise ValueError(f"{label_file(shard_id)} holds embeddings of another tower ({(tower or 'unrecorded')[:12]})")
    errors = checked(error_file(shard_id)) if error_file(shard_id) in files else None
    return labels, errors, int(record["samples"])


#: The row protocol's columns of a rescore's read block, in READ_SCHEMA's order (no image; the CPU column is added
#: by block_of).
BLOCK_FIELDS = [field for field in READ_SCHEMA if field.name not in ("image", READ_CPU)]


def row_table(columns: dict[str, Any], count: int) -> pa.Table:
    """`count` rows of BLOCK_FIELDS: the given columns (Arrow arrays or lists) in their protocol types, null in the
    others."""
    return pa.table({field.name: typed(columns.get(field.name), field.type, count) for field in BLOCK_FIELDS})


def typed(values: Any, kind: pa.DataType, count: int) -> pa.Array:
    if values is None:
        return pa.nulls(count, kind)
    return pa.array(values, kind) if isinstance(values, list) else values.cast(kind)


def sample_rows(labels: pa.Table, meta_fields: tuple[str, ...]) -> pa.Table:
    """A label file's rows as sample rows (without the embedding), the promoted metadata back in JSON."""
    count = labels.num_rows
    meta = meta_texts(labels, meta_fields)
    return row_table({"kind": [SAMPLE] * count, "key": labels.column(KEY), "meta": meta}, count)


def meta_texts(labels: pa.Table, meta_fields: tuple[str, ...]) -> pa.Array:
    """Each row's `json.dumps({field: value})` of the promoted fields the file has, assembled column by column from
    the JSON of each distinct value: one json.dumps a row cost more than reading the row's embedding."""
    parts: list[Any] = []
    for name in (name for name in meta_fields if name in labels.column_names):
        parts += ["{" if not parts else ", ", f"{json.dumps(name)}: ", value_texts(labels.column(name))]
    if not parts:
        return pa.array(["{}"] * labels.num_rows, pa.string())
    return pc.binary_join_element_wise(*parts, "}", "")


def value_texts(column: pa.ChunkedArray) -> pa.Array:
    """The JSON text of each value of a column ("null" for a null)."""
    values = column.combine_chunks()
    if not pa.types.is_dictionary(values.type):
        try:
            values = values.dictionary_encode()
        except pa.ArrowNotImplementedError:  # nested values (lists, structs) have no dictionary: one at a time
            return pa.array([json.dumps(value) for value in values.to_pylist()], pa.string())
    texts = pa.array([json.dumps(value) for value in values.dictionary.to_pylist()], pa.string())
    return pc.fill_null(texts.take(values.indices), "null")


def error_rows(errors: pa.Table) -> pa.Table:
    """An error file's rows as error rows, as the source recorded them."""
    count = errors.num_rows
    columns = {name: errors.column(name) for name in ERROR_COLUMNS if name != SHARD}
    return row_table({"kind": [ERROR] * count, **columns}, count)


def end_row(count: int, status: str, reason: str | None, retryable: bool) -> pa.Table:
    return row_table(
        {"kind": [END], "count": [count], "status": [status], "reason": [reason], "retryable": [retryable]}, 1
    )


def block_of(shard_id: str, rows: pa.Table, first_seq: int, embedding: np.ndarray, started: float):
    """`rows` as one block of the shard: its id, their sequence numbers from `first_seq` (-1 for an `end` row) and
    the read's CPU columns; and the embeddings of all its rows, NaN after the given ones (`embedding` holds those of
    its samples, which come first: a shard's samples precede its errors)."""
    count = rows.num_rows
    is_end = pc.equal(rows["kind"], END).to_numpy(zero_copy_only=False)
    seq = np.where(is_end, -1, np.arange(first_seq, first_seq + count, dtype=np.int64))
    vectors = np.full((count, embedding.shape[1]), np.nan, dtype=np.float32)
    vectors[: len(embedding)] = embedding
    rows = rows.set_column(rows.schema.get_field_index("shard"), "shard", pa.array([shard_id] * count, pa.string()))
    rows = rows.set_column(rows.schema.get_field_index("seq"), "seq", pa.array(seq))
    return rows.append_column(READ_CPU, pa.array(cpu_share(time.thread_time() - started, count))), vectors

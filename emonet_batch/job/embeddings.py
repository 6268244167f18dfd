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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UsageError, first_line
from ..model.record import ModelInfo
from .commitlog import read_records
from .config import StorageOptions
from .inputs import EMBEDDINGS, Shard, normalised_location
from .layout import (
    EMBEDDING_COLUMN,
    ERROR_COLUMNS,
    KEY,
    LABEL_OPTIONS,
    TOWER_ID_METADATA,
    commit_file,
    error_file,
    label_file,
)
from .rows import COMPLETE, EMBEDDING, END, ERROR, FAILED, READ_CPU, SAMPLE, cpu_share
from .storage import filesystem, join, redact_url
from .verify import recorded_bytes


@dataclass(frozen=True)
class EmbeddingSource:
    """A scored output whose label files hold embeddings, as a rescore reads it."""

    url: str
    tower_id: str
    dim: int
    label_options: dict[str, Any]  # the source's _label_options.json

    @property
    def meta_fields(self) -> tuple[str, ...]:
        return tuple(self.label_options.get("meta_fields") or ())


def open_source(url: str, output: str, info: ModelInfo, storage: StorageOptions) -> tuple[EmbeddingSource, list[Shard]]:
    """The source output and its committed shards, or a one-line refusal: no embeddings, another tower, another
    width, not an output, nothing committed, or the new output in the same place."""
    fs, root = filesystem(url, storage)
    display = redact_url(url)
    if normalised_location(url).rstrip("/") == normalised_location(output).rstrip("/"):
        raise UsageError(f"--output is the source {display}: write the new labels to another output")
    try:
        options = json.loads(fs.cat_file(join(root, LABEL_OPTIONS)))
    except FileNotFoundError:
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
    if not info.tower_id:
        raise UsageError("the model records no tower id (exported before heads-only models): export it again")
    if tower != info.tower_id:
        raise UsageError(
            f"{display} holds embeddings of tower {tower[:12] if tower else '(unrecorded)'}, the model reads those "
            f"of tower {info.tower_id[:12]}: export the heads with the --encoder that scored {display}"
        )
    if dim != info.embedding_dim:
        raise UsageError(f"{display} holds {dim}-d embeddings, the model reads {info.embedding_dim}-d ones")
    # each shard keeps its input's location (the new commit records name it, so the report finds its images); a
    # record of an older emonet-batch that names none is located by its label file
    shards = [
        Shard(record.get("location") or normalised_location(join(url, label_file(shard_id))), shard_id, EMBEDDINGS)
        for shard_id, record in sorted(records.items())
    ]
    return EmbeddingSource(url, tower, dim, options), shards


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
    """The tower id a label file's metadata names (None in files written before it was recorded)."""
    tower = (schema.metadata or {}).get(TOWER_ID_METADATA.encode())
    return tower.decode() if tower else None


def embedding_batches(
    source: EmbeddingSource, shard_id: str, storage: StorageOptions, rows_per_block: int
) -> Iterator[dict[str, np.ndarray]]:
    """A committed shard of the source as blocks of at most `rows_per_block` rows (the row protocol's columns
    and `embedding`), `end` last; never an exception: a shard that cannot be used ends `failed` with the reason."""
    started = time.thread_time()
    try:
        labels, errors, samples = checked_tables(source, shard_id, storage)
    except Exception as exc:  # whatever the storage backend raises (botocore's credential errors are no OSError)
        reason = f"source shard unusable: {type(exc).__name__}: {first_line(exc)}"
        yield rows_of(shard_id, [], source.dim, end=(0, FAILED, reason), started=started)
        return
    rows = sample_rows(labels, source.meta_fields) + error_rows(errors)
    if len(rows) != samples:
        reason = f"source shard unusable: its record counts {samples} samples, its files hold {len(rows)}"
        yield rows_of(shard_id, [], source.dim, end=(0, FAILED, reason), started=started)
        return
    embedding = labels.column(EMBEDDING_COLUMN).combine_chunks().flatten().to_numpy().reshape(-1, source.dim)
    for first in range(0, len(rows), rows_per_block):
        last = min(first + rows_per_block, len(rows))
        end = (len(rows), COMPLETE, None) if last == len(rows) else None
        yield rows_of(shard_id, rows[first:last], source.dim, embedding[first:last], end, started, first)
        started = time.thread_time()
    if not rows:
        yield rows_of(shard_id, [], source.dim, end=(0, COMPLETE, None), started=started)


def checked_tables(source: EmbeddingSource, shard_id: str, storage: StorageOptions) -> tuple[pa.Table, pa.Table, int]:
    """The shard's label and error tables, their bytes checked against its record; and the samples it counts."""
    fs, root = filesystem(source.url, storage)
    record = json.loads(fs.cat_file(join(root, commit_file(shard_id))))
    files = record["files"]

    def checked(name: str) -> pa.Table:
        return pq.read_table(pa.BufferReader(recorded_bytes(fs, root, name, files[name])))

    labels = checked(label_file(shard_id))
    tower = recorded_tower(labels.schema)
    if tower != source.tower_id:
        raise ValueError(f"{label_file(shard_id)} holds embeddings of another tower ({(tower or 'unrecorded')[:12]})")
    errors = checked(error_file(shard_id)) if error_file(shard_id) in files else None
    return labels, errors, int(record["samples"])


def sample_rows(labels: pa.Table, meta_fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """A label file's rows as sample rows (without the embedding), the promoted metadata back in JSON."""
    keys = labels.column(KEY).to_pylist()
    fields = {name: labels.column(name).to_pylist() for name in meta_fields if name in labels.column_names}
    return [
        {"kind": SAMPLE, "key": key, "meta": json.dumps({name: values[i] for name, values in fields.items()})}
        for i, key in enumerate(keys)
    ]


def error_rows(errors: pa.Table | None) -> list[dict[str, Any]]:
    if errors is None:
        return []
    columns = {name: errors.column(name).to_pylist() for name in ERROR_COLUMNS if name != "shard"}
    return [{"kind": ERROR, **{name: values[i] for name, values in columns.items()}} for i in range(errors.num_rows)]


def rows_of(
    shard_id: str,
    rows: list[dict[str, Any]],
    dim: int,
    embedding: np.ndarray | None = None,
    end: tuple[int, str, str | None] | None = None,
    started: float = 0.0,
    first_seq: int = 0,
) -> dict[str, np.ndarray]:
    """Rows as one block's columns; the `end` row (count, status, reason) last when given. Rows without an
    embedding (errors, end) carry NaNs, as non-sample rows do in every stage."""
    rows = [*rows, *([{"kind": END, "count": end[0], "status": end[1], "reason": end[2]}] if end else [])]
    count = len(rows)
    column = lambda name: np.array([row.get(name) for row in rows], dtype=object)  # noqa: E731
    seq = np.arange(first_seq, first_seq + count, dtype=np.int64)
    if end:
        seq[-1] = -1
    vectors = np.full((count, dim), np.nan, dtype=np.float32)
    if embedding is not None:  # the block's sample rows, which come first (a shard's samples precede its errors)
        vectors[: len(embedding)] = embedding
    return {
        "kind": column("kind"),
        "shard": np.full(count, shard_id, dtype=object),
        "seq": seq,
        **{name: column(name) for name in ("key", "meta", "stage", "error_type", "message", "count", "status")},
        "reason": column("reason"),
        READ_CPU: cpu_share(time.thread_time() - started, count),
        EMBEDDING: vectors,
    }

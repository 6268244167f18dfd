"""Verify an output against its commit records, and read its committed label files checked.

A record names every file of its shard with its sha256. Verification reads the bytes and compares; the
analysis stages read label files through `checked_label_files`, so a tampered or half-copied file stops
them instead of entering the statistics, and label files that disagree on their columns or model (which
a run refuses to write, but a hand-made copy could hold) are refused in one line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UsageError
from .commitlog import Records, read_records
from .layout import MODEL_ID_METADATA, label_file
from .storage import NOT_FOUND, is_local, join, redact_url


def committed_shards(fs, output: str) -> dict[str, dict[str, Any]]:
    """Shard id -> its commit record (an unreadable record is not a committed shard); a usage error when
    nothing was committed yet."""
    commits = read_records(fs, output).records
    if not commits:
        raise nothing_committed(fs, output)
    return commits


def nothing_committed(fs, output: str) -> UsageError:
    shown = redact_url(output if is_local(fs) else fs.unstrip_protocol(output))  # s3://bucket/..., not bucket/...
    return UsageError(f"no committed shards under {shown} (run `emonet-batch score` first)")


class CommittedFileError(ValueError):
    """A committed file is missing or does not hold the bytes its record names."""


def recorded_bytes(fs, output: str, name: str, digest: str | None) -> bytes:
    """The bytes of the committed file `name`, checked against the sha256 its record names."""
    try:
        data = fs.cat_file(join(output, name))
    except NOT_FOUND:
        raise CommittedFileError(f"{name} is missing") from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise CommittedFileError(f"{name} differs from its recorded sha256")
    return data


def file_problem(fs, output: str, name: str, digest: str) -> str | None:
    """Why a committed file does not hold the bytes its record names (None when it does)."""
    try:
        recorded_bytes(fs, output, name, digest)
    except CommittedFileError as exc:
        return str(exc)
    return None


def verify_output(fs, output: str) -> dict[str, str]:
    """damaged_shards of an output that holds commit records; a usage error when it holds none (a mistyped output,
    or one no run has committed to: there is nothing to verify)."""
    found = read_records(fs, output, full=True)
    if not found.records and not found.unreadable:
        raise nothing_committed(fs, output)
    return damaged_shards(fs, output, found)


def damaged_shards(fs, output: str, found: Records | None = None) -> dict[str, str]:
    """Shard id -> what is wrong with it, for every shard whose record cannot be read or whose files do not
    hold the recorded bytes; empty when the output is sound. The records are `found`, or read from their own files
    (full: they decide, whatever a checkpoint says)."""
    if found is None:
        found = read_records(fs, output, full=True)
    problems = {shard_id: "its commit record cannot be read" for shard_id in found.unreadable}
    for shard_id, record in sorted(found.records.items()):
        files = record.get("files")
        if not isinstance(files, dict) or label_file(shard_id) not in files:
            problems[shard_id] = "its commit record names no label file"
            continue
        differ = [p for name, digest in files.items() if (p := file_problem(fs, output, name, digest))]
        if differ:
            problems[shard_id] = "; ".join(differ)
    return problems


def checked_label_files(fs, output: str, commits: dict[str, Any]) -> Iterator[tuple[str, pq.ParquetFile]]:
    """(shard id, its label file) in shard order, each read whole and checked against its record, and
    against the first file's columns and model."""
    first: tuple[str, pa.Schema] | None = None
    for shard_id in sorted(commits):
        name = label_file(shard_id)
        try:
            data = recorded_bytes(fs, output, name, commits[shard_id].get("files", {}).get(name))
        except CommittedFileError as exc:
            raise UsageError(
                f"committed {exc}; `emonet-batch verify` lists every such shard, `emonet-batch score --repair` "
                "redoes them"
            ) from None
        parquet = pq.ParquetFile(pa.BufferReader(data))
        schema = parquet.schema_arrow
        if first is None:
            first = (name, schema)
        elif not _same_labels(first[1], schema):
            raise UsageError(
                f"label files disagree: {first[0]} and {name} differ in {_difference(first[1], schema)}; "
                "an output holds the labels of one model and one set of options"
            )
        yield shard_id, parquet


def _same_labels(a: pa.Schema, b: pa.Schema) -> bool:
    return a.names == b.names and a.types == b.types and _model_id(a) == _model_id(b)


def _difference(a: pa.Schema, b: pa.Schema) -> str:
    if _model_id(a) != _model_id(b):
        return "model"
    only = sorted(set(a.names) ^ set(b.names))
    return f"columns ({', '.join(only[:5])})" if only else "column types or order"


def _model_id(schema: pa.Schema) -> bytes | None:
    return (schema.metadata or {}).get(MODEL_ID_METADATA.encode())

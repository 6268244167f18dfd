"""Commit stage: one shard's rows -> labels/<id>.parquet, errors/<id>.parquet, then _commits/<id>.json.

The commit record is written last and create-only: a shard is done exactly when its record exists, so
a crash between files leaves a shard that the next run simply redoes. Files are deterministic (rows in
read order, no timestamps), so the same inputs and model give byte-identical label files.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .config import ScoreConfig
from .model import ModelInfo
from .postprocess import derive, top_emotion
from .read import ERROR, SAMPLE
from .storage import create_only, join, write_bytes

LABELS, ERRORS, COMMITS = "labels", "errors", "_commits"
ERROR_COLUMNS = ("key", "shard", "stage", "error_type", "message")
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
    skipped: bool = False  # committed by an earlier run

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "shard"}

    def commit_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.as_dict().items() if k not in ("status", "skipped", "reason")}


def reserved_columns(info: ModelInfo, config: ScoreConfig) -> set[str]:
    names = {"key", "shard", "top_emotion", "top_prob", "embedding", *info.heads}
    if config.centered:
        names |= {f"{h}_centered" for h in info.heads}
    if config.softmax:
        names |= {f"{h}_softmax" for h in info.heads}
    return names


def label_table(rows: dict[str, np.ndarray], info: ModelInfo, config: ScoreConfig) -> pa.Table:
    """Label rows (kind == sample, in read order) -> the labels table of DESIGN.md's schema."""
    count = len(rows["key"])
    scores = np.asarray(rows["scores"], dtype=np.float32).reshape(count, len(info.heads))
    derived = derive(scores, info.heads, info.neutral_means)
    top, top_prob = top_emotion(derived["softmax"], info.heads) if count else ([], np.zeros(0))
    columns: dict[str, pa.Array] = {
        "key": pa.array(rows["key"].tolist(), pa.string()),
        "shard": pa.array(rows["shard"].tolist(), pa.string()).dictionary_encode(),
    }
    for i, head in enumerate(info.heads):
        columns[head] = pa.array(scores[:, i], pa.float32())
    columns["top_emotion"] = pa.array(list(top), pa.string()).cast(_STRING_DICT)
    columns["top_prob"] = pa.array(np.asarray(top_prob, dtype=np.float32), pa.float32())
    if config.centered:
        for i, head in enumerate(info.heads):
            columns[f"{head}_centered"] = pa.array(derived["centered"][:, i].astype(np.float32), pa.float32())
    if config.softmax:
        for i, head in enumerate(info.heads):
            columns[f"{head}_softmax"] = pa.array(derived["softmax"][:, i].astype(np.float32), pa.float32())
    if config.embedding:
        embedding = np.asarray(rows["embedding"], dtype=np.float32).reshape(count, info.embedding_dim)
        columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(embedding.reshape(-1), pa.float32()), info.embedding_dim)
    for field, values in meta_columns(rows["meta"], config.meta_fields).items():
        columns[field] = values
    table = pa.table(columns)
    return table.replace_schema_metadata(file_metadata(info))


def meta_columns(meta: np.ndarray, fields: tuple[str, ...]) -> dict[str, pa.Array]:
    """Promoted metadata fields as typed columns (strings when a field mixes types, nests or is all null)."""
    parsed = [json.loads(m) if isinstance(m, str) else {} for m in meta]
    out = {}
    for field in fields:
        values = [record.get(field) if isinstance(record, dict) else None for record in parsed]
        try:
            array = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            array = _as_strings(values)
        if pa.types.is_null(array.type) or pa.types.is_nested(array.type):
            array = _as_strings(values)
        out[field] = array.dictionary_encode() if pa.types.is_string(array.type) else array
    return out


def _as_strings(values: list[Any]) -> pa.Array:
    return pa.array([v if v is None or isinstance(v, str) else json.dumps(v) for v in values], pa.string())


def error_table(rows: dict[str, np.ndarray], info: ModelInfo) -> pa.Table:
    columns = {name: pa.array(rows[name].tolist(), pa.string()) for name in ERROR_COLUMNS}
    for name in ("shard", "stage", "error_type"):
        columns[name] = columns[name].dictionary_encode()
    return pa.table(columns).replace_schema_metadata(file_metadata(info))


def file_metadata(info: ModelInfo) -> dict[str, str]:
    return {
        "emonet_batch.version": __version__,
        "emonet_batch.model_id": info.model_id,
        "emonet_batch.heads": json.dumps(list(info.heads)),
        "emonet_batch.precision": info.precision,
    }


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", row_group_size=64 * 1024)
    return buffer.getvalue()


def select(rows: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {name: column[mask] for name, column in rows.items()}


def commit_shard(
    fs, output: str, shard_id: str, rows: dict[str, np.ndarray], end: dict[str, Any], info: ModelInfo, config: ScoreConfig, display_url: str
) -> ShardOutcome:
    """Write a shard's files, then (for a completely read shard) its create-only commit record."""
    order = np.argsort(rows["seq"], kind="stable")
    rows = select(rows, order)
    labels = select(rows, rows["kind"] == SAMPLE)
    errors = select(rows, rows["kind"] == ERROR)
    outcome = ShardOutcome(shard_id, display_url, end["status"], end["count"], len(labels["key"]), len(errors["key"]), end["reason"])
    if outcome.labels + outcome.errors != outcome.samples:
        raise AssertionError(f"shard {shard_id}: {outcome.samples} samples read but {outcome.labels} labels + {outcome.errors} errors")
    if end["status"] == "failed":
        return outcome
    files = {f"{LABELS}/{shard_id}.parquet": parquet_bytes(label_table(labels, info, config))}
    if outcome.errors:
        files[f"{ERRORS}/{shard_id}.parquet"] = parquet_bytes(error_table(errors, info))
    elif fs.exists(stale := join(output, ERRORS, f"{shard_id}.parquet")):
        fs.rm(stale)  # left by an earlier, incomplete attempt at this shard
    for name, data in files.items():
        write_bytes(fs, join(output, name), data)
    if end["status"] == "complete":
        record = {
            "shard": shard_id,
            **outcome.commit_fields(),
            "model_id": info.model_id,
            "files": {name: _sha256(data) for name, data in files.items()},
            "emonet_batch": __version__,
            "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if not create_only(fs, join(output, COMMITS, f"{shard_id}.json"), json.dumps(record, indent=1).encode()):
            outcome.reason = "already committed by another run; its files were kept"
    return outcome


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()

"""Stats stage: aggregate statistics of a scoring output, streamed over the committed label files'
record batches (memory does not grow with the corpus), written to <output>/stats/.

Exact: counts, means, std (ddof=1), min, max, histograms, top-emotion and family counts, the Pearson
correlation of the 40 emotion scores (from running sums of x and x·xᵀ), per-group means and shares.
Quantiles come from a 0.001-wide histogram of each head, so they are exact to within 0.001 (values outside
[-10, 20] are clamped into the edge bins; the quantiles then stay within [min, max]).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import UsageError, first_line
from ..job.config import StorageOptions
from ..job.layout import MANIFEST, MANIFEST_SHARDS, STATS_JSON, TOP_EMOTION, metadata_columns, stats_file
from ..job.rows import COMPLETE, FAILED, INCOMPLETE
from ..job.storage import NOT_FOUND, filesystem, join, json_object, parquet_bytes, redact_url, write_bytes
from ..job.verify import checked_label_files, committed_shards
from ..model.taxonomy import EMOTION_COLUMNS, HEAD_COLUMNS, family_of

QUANTILES = (0.05, 0.25, 0.50, 0.75, 0.95)
#: Plot/table histogram bins over the annotation scale (scores are roughly 0..7).
HISTOGRAM_EDGES = np.round(np.arange(-1.0, 8.0 + 1e-9, 0.25), 2)
_FINE_LO, _FINE_WIDTH, _FINE_BINS = -10.0, 0.001, 30_000
#: Numeric metadata (age, ...) is grouped into bins this wide; strings and booleans by value.
NUMERIC_GROUP_WIDTH = 10
#: A metadata field with more distinct groups than this is not grouped (stats.json lists it under
#: `metadata_skipped` with its number of distinct values).
MAX_GROUPS = 50
SHARD_STATUSES = (COMPLETE, INCOMPLETE, FAILED)
#: The not-complete shards stats.json (and the report) name; the manifest's shard table has them all.
NOT_COMPLETE_SHOWN = 20


@dataclass
class HeadStats:
    heads: list[str]
    count: np.ndarray = field(init=False)
    total: np.ndarray = field(init=False)
    squares: np.ndarray = field(init=False)
    low: np.ndarray = field(init=False)
    high: np.ndarray = field(init=False)
    histogram: np.ndarray = field(init=False)
    fine: np.ndarray = field(init=False)

    def __post_init__(self):
        n = len(self.heads)
        self.count, self.total, self.squares = np.zeros(n, np.int64), np.zeros(n), np.zeros(n)
        self.low, self.high = np.full(n, np.inf), np.full(n, -np.inf)
        self.histogram = np.zeros((n, len(HISTOGRAM_EDGES) + 1), np.int64)  # + under- and overflow
        self.fine = np.zeros((n, _FINE_BINS), np.int64)

    def add(self, scores: np.ndarray) -> None:
        for h in range(len(self.heads)):
            values = scores[:, h][~np.isnan(scores[:, h])]
            if not values.size:
                continue
            self.count[h] += values.size
            self.total[h] += values.sum()
            self.squares[h] += np.square(values).sum()
            self.low[h], self.high[h] = min(self.low[h], values.min()), max(self.high[h], values.max())
            self.histogram[h] += np.bincount(
                np.searchsorted(HISTOGRAM_EDGES, values, side="right"), minlength=len(HISTOGRAM_EDGES) + 1
            )
            fine = np.clip(((values - _FINE_LO) / _FINE_WIDTH).astype(np.int64), 0, _FINE_BINS - 1)
            self.fine[h] += np.bincount(fine, minlength=_FINE_BINS)

    def quantile(self, h: int, q: float) -> float:
        """Linear interpolation between order statistics (pandas' default), on bin centres."""
        n = self.count[h]
        cumulative = np.cumsum(self.fine[h])
        position = q * (n - 1)
        below, above = int(np.floor(position)), int(np.ceil(position))
        centre = lambda rank: _FINE_LO + (np.searchsorted(cumulative, rank + 1) + 0.5) * _FINE_WIDTH  # noqa: E731
        value = centre(below) + (centre(above) - centre(below)) * (position - below)
        return float(np.clip(value, self.low[h], self.high[h]))

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for h, head in enumerate(self.heads):
            n = int(self.count[h])
            mean = self.total[h] / n if n else float("nan")
            variance = (self.squares[h] - n * mean * mean) / (n - 1) if n > 1 else float("nan")
            row = {
                "head": head,
                "count": n,
                "mean": mean,
                "std": float(np.sqrt(max(variance, 0.0))) if n > 1 else float("nan"),
                "min": float(self.low[h]) if n else float("nan"),
                "max": float(self.high[h]) if n else float("nan"),
            }
            row.update({f"p{round(q * 100)}": self.quantile(h, q) if n else float("nan") for q in QUANTILES})
            rows.append(row)
        return rows


@dataclass
class Correlation:
    """Running sums for the Pearson correlation of the emotion columns (rows with a NaN are skipped)."""

    columns: list[str]
    n: int = 0
    total: np.ndarray | None = None
    products: np.ndarray | None = None

    def add(self, values: np.ndarray) -> None:
        values = values[~np.isnan(values).any(axis=1)]
        if self.total is None:
            self.total, self.products = np.zeros(values.shape[1]), np.zeros((values.shape[1],) * 2)
        self.n += len(values)
        self.total += values.sum(axis=0)
        self.products += values.T @ values

    def matrix(self) -> np.ndarray:
        if self.n < 2:
            return np.full((len(self.columns),) * 2, np.nan)
        covariance = (self.products - np.outer(self.total, self.total) / self.n) / (self.n - 1)
        scale = np.sqrt(np.diag(covariance))
        with np.errstate(invalid="ignore", divide="ignore"):
            return covariance / np.outer(scale, scale)


@dataclass
class GroupStats:
    """Per metadata field and group: row count, per-head sums (for means) and top-emotion counts. A field with
    more than MAX_GROUPS distinct groups (free text, ids) is not grouped: it is counted in `skipped` (field ->
    its distinct values), so stats stay bounded whatever the corpus."""

    heads: list[str]
    count: dict[tuple[str, str], int] = field(default_factory=dict)
    sums: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    top: dict[tuple[str, str, str], int] = field(default_factory=dict)
    skipped: dict[str, set[int]] = field(default_factory=dict)

    def add(self, name: str, groups: list[str], scores: np.ndarray, top: list[str]) -> None:
        if name in self.skipped:
            self.skipped[name].update(map(hash, groups))
            return
        keys, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
        for g, key in enumerate(keys):
            rows = inverse == g
            self.count[(name, key)] = self.count.get((name, key), 0) + int(rows.sum())
            self.sums[(name, key)] = self.sums.get((name, key), 0) + np.nansum(scores[rows], axis=0)
        for key, emotion in zip(np.asarray(groups, dtype=object).astype(str), top):
            self.top[(name, key, emotion)] = self.top.get((name, key, emotion), 0) + 1
        seen = {key for field_name, key in self.count if field_name == name}
        if len(seen) > MAX_GROUPS:
            self._stop_grouping(name, seen)

    def _stop_grouping(self, name: str, seen: set[str]) -> None:
        self.skipped[name] = set(map(hash, seen))
        for table in (self.count, self.sums, self.top):
            for key in [k for k in table if k[0] == name]:
                del table[key]

    def cardinality(self) -> dict[str, int]:
        """The fields not grouped, with how many distinct values they have."""
        return {name: len(values) for name, values in sorted(self.skipped.items())}

    def tables(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        means = [
            {"field": f, "group": g, "count": n, **dict(zip(self.heads, (self.sums[(f, g)] / n).tolist()))}
            for (f, g), n in sorted(self.count.items())
        ]
        shares = [
            {"field": f, "group": g, "top_emotion": e, "count": c, "share": c / self.count[(f, g)]}
            for (f, g, e), c in sorted(self.top.items())
        ]
        return means, shares


def group_labels(values: list[Any]) -> list[str]:
    """Group names: numbers binned NUMERIC_GROUP_WIDTH wide (`30-39`), everything else by value. A NaN (what
    `json.dumps` writes for a pandas gap) is missing; an infinity is its own group."""
    out = []
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out.append("(missing)")
        elif isinstance(value, float) and math.isinf(value):
            out.append(str(value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            low = int(np.floor(value / NUMERIC_GROUP_WIDTH) * NUMERIC_GROUP_WIDTH)
            out.append(f"{low}-{low + NUMERIC_GROUP_WIDTH - 1}")
        else:
            out.append(str(value))
    return out


#: Rows per record batch when the analysis streams label files.
BATCH_ROWS = 16_384


def label_batches(fs, output: str, commits: dict[str, Any]) -> Iterator[pa.RecordBatch]:
    """The committed label files' record batches, each file checked against its record first."""
    for _, parquet in checked_label_files(fs, output, commits):
        yield from parquet.iter_batches(batch_size=BATCH_ROWS)


def compute_stats(output_url: str, storage: StorageOptions = StorageOptions()) -> dict[str, Any]:
    """Compute and write <output>/stats/: stats.json plus Parquet tables. Returns the stats.json content."""
    started = time.perf_counter()
    fs, output = filesystem(output_url, storage)
    commits = committed_shards(fs, output)
    # every checked file has the first one's columns (checked_label_files refuses others): read its schema there
    files = checked_label_files(fs, output, commits)
    first = next(files)
    schema = first[1].schema_arrow
    heads = [h for h in HEAD_COLUMNS if h in schema.names]
    emotions = [h for h in EMOTION_COLUMNS if h in heads]
    metadata = metadata_columns(schema.names, HEAD_COLUMNS)
    head_stats, correlation, groups = HeadStats(heads), Correlation(emotions), GroupStats(heads)
    top_counts: dict[str, int] = {}
    rows = 0
    batches = (batch for _, parquet in itertools.chain([first], files) for batch in parquet.iter_batches(BATCH_ROWS))
    for batch in batches:
        scores = np.column_stack([batch.column(h).to_numpy(zero_copy_only=False) for h in heads]).astype(np.float64)
        top = [str(v) for v in batch.column(TOP_EMOTION).to_pylist()]
        rows += batch.num_rows
        head_stats.add(scores)
        correlation.add(scores[:, [heads.index(e) for e in emotions]])
        for emotion in top:
            top_counts[emotion] = top_counts.get(emotion, 0) + 1
        for name in metadata:
            groups.add(name, group_labels(batch.column(name).to_pylist()), scores, top)
    result = assemble(head_stats, correlation, groups, top_counts, rows, len(commits), metadata, fs, output)
    result["run"]["stats_wall_s"] = round(time.perf_counter() - started, 3)
    return write_stats(fs, output, result, head_stats)


def not_complete_shards(fs, output: str, first: int | None) -> list[dict[str, Any]]:
    """The last run's first `first` (None: all) shards that did not complete (input order), from the manifest's
    shard table; the filter reads the status column alone, so a million complete shards cost one column."""
    try:
        with fs.open(join(output, MANIFEST_SHARDS), "rb") as file:
            parquet = pq.ParquetFile(file)
            status = parquet.read(columns=["status"])["status"].cast(pa.string())
            rows = pc.indices_nonzero(pc.not_equal(status, COMPLETE)).to_pylist()[:first]
            table = parquet.read(columns=["shard", "input", "status", "reason"]).take(rows) if rows else None
    except (FileNotFoundError, pa.ArrowInvalid):
        return []
    return table.to_pylist() if table is not None else []


def read_manifest(fs, output: str) -> dict[str, Any]:
    """The output's manifest.json ({} before its first run ends); a usage error when it cannot be read."""
    try:
        return json_object(fs, join(output, MANIFEST))
    except NOT_FOUND:
        return {}
    except ValueError as exc:
        raise UsageError(
            f"{redact_url(output)}/{MANIFEST} cannot be read ({first_line(exc)}); the score command, run again, "
            "writes it anew"
        ) from None


def assemble(head_stats, correlation, groups, top_counts, rows, files, metadata, fs, output) -> dict[str, Any]:
    manifest = read_manifest(fs, output)
    group_means, group_shares = groups.tables()
    families: dict[str, int] = {}
    for emotion, count in top_counts.items():
        families[family_of(emotion)] = families.get(family_of(emotion), 0) + count
    return {
        "run": {
            "model": manifest.get("model", {}),
            "label_rows": rows,
            "label_files": files,
            "images": manifest.get("totals", {}).get("samples"),
            "errors": manifest.get("totals", {}).get("errors"),
            "shards": {status: manifest.get("shard_counts", {}).get(status, 0) for status in SHARD_STATUSES},
            "not_complete": not_complete_shards(fs, output, NOT_COMPLETE_SHOWN),
        },
        "heads": head_stats.table(),
        "histogram_edges": HISTOGRAM_EDGES.tolist(),
        "histograms": {h: head_stats.histogram[i].tolist() for i, h in enumerate(head_stats.heads)},
        "top_emotion": {
            e: {"count": c, "share": c / rows} for e, c in sorted(top_counts.items(), key=lambda kv: -kv[1])
        },
        "top_family": {f: {"count": c, "share": c / rows} for f, c in sorted(families.items(), key=lambda kv: -kv[1])},
        "correlation": {"columns": correlation.columns, "matrix": correlation.matrix().tolist()},
        "metadata_fields": [name for name in metadata if name not in groups.skipped],
        "metadata_skipped": groups.cardinality(),
        "groups": group_means,
        "group_top_emotion": group_shares,
    }


def write_stats(fs, output: str, result: dict[str, Any], head_stats: HeadStats) -> dict[str, Any]:
    """stats.json and the Parquet tables (which keep NaN where JSON has null); returns stats.json's content."""
    ready = json_ready(result)
    write_bytes(fs, join(output, stats_file(STATS_JSON)), json.dumps(ready, indent=1, allow_nan=False).encode())
    edges = HISTOGRAM_EDGES
    histogram_rows = [
        {"head": head, "bin_low": float(lo), "bin_high": float(hi), "count": int(head_stats.histogram[h][b])}
        for h, head in enumerate(head_stats.heads)
        for b, (lo, hi) in enumerate(zip([-np.inf, *edges], [*edges, np.inf]))
    ]
    correlation = result["correlation"]
    tables = {
        "heads": result["heads"],
        "histograms": histogram_rows,
        "top_emotions": [{"top_emotion": e, "family": family_of(e), **v} for e, v in result["top_emotion"].items()],
        "correlation": [
            {"emotion": e, **dict(zip(correlation["columns"], row))}
            for e, row in zip(correlation["columns"], correlation["matrix"])
        ],
        "groups": result["groups"],
        "group_top_emotions": result["group_top_emotion"],
    }
    for name, rows in tables.items():
        if rows:
            write_bytes(fs, join(output, stats_file(f"{name}.parquet")), parquet_bytes(pa.Table.from_pylist(rows)))
    return ready


def json_ready(value: Any) -> Any:
    """NaN -> None (JSON has no NaN), numpy scalars -> Python, recursively."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value

"""A run's figures, its exit code and manifest: `manifest.json` (the run's summary) with two tables beside it, the
outcome of every shard and the figures of every run, so that the summary stays small whatever the corpus."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__
from ..analysis.summary import listed
from ..errors import first_line
from ..job.commit import ShardOutcome
from ..job.inputs import Shard
from ..job.layout import MANIFEST, MANIFEST_RUNS, MANIFEST_SHARDS
from ..job.read import TRUNCATED
from ..job.storage import NOT_FOUND, join, parquet_bytes, write_bytes
from ..model.record import ModelInfo
from .config import ScoreConfig, manifest_options
from .progress import Counters

# exit codes; 2 (usage error) comes from UsageError in the CLI
EXIT_CLEAN, EXIT_FAILED, EXIT_TOO_MANY_ERRORS = 0, 1, 3


def run_figures(outcomes: dict[str, ShardOutcome], counters: Counters, wall: float, stage_stats: str) -> dict[str, Any]:
    this_run = [o for o in outcomes.values() if not o.skipped]
    images = sum(o.samples for o in this_run)
    return {
        "images": images,
        "labels": sum(o.labels for o in this_run),
        "errors": sum(o.errors for o in this_run),
        "shards_scored": len(this_run),
        "shards_skipped": sum(o.skipped for o in outcomes.values()),
        "wall_s": round(wall, 3),
        "images_per_s": round(images / wall, 3) if wall > 0 else 0.0,
        "images_by_worker": counters.images_by_worker,
        # from the run's start (the model check) to the first scored batch, and the rate from there on, which a
        # longer run tends to
        "startup_s": round(counters.first_batch_s, 3) if counters.first_batch_s is not None else None,
        "scoring_images_per_s": round(images / counters.scoring_s, 3) if counters.scoring_s > 0 else None,
        "cpu_ms_per_image": {
            stage: round(seconds * 1000 / images, 4) for stage, seconds in counters.cpu_seconds.items()
        }
        if images
        else {},
        "stages": stage_stats,
    }


def exit_status(outcomes: dict[str, ShardOutcome], max_error_rate: float) -> tuple[int, str]:
    """The run's exit code and why, in one line: the shards not complete, else the error rate against the limit
    with the error rows by type."""
    unfinished = [o for o in outcomes.values() if o.status != "complete"]
    if unfinished:
        named = listed([f"{o.shard} {o.status}" for o in unfinished])
        return (
            EXIT_FAILED,
            f"{len(unfinished)} of {len(outcomes)} shards not complete ({named}); {rerun_hint(unfinished)}",
        )
    samples = sum(o.samples for o in outcomes.values())
    errors = sum(o.errors for o in outcomes.values())
    types: Counter = Counter()
    for outcome in outcomes.values():
        types.update(outcome.error_types)
    too_many = bool(samples) and errors / samples > max_error_rate
    rate = f"{errors} error rows in {samples} samples ({errors / samples if samples else 0:.2%})"
    limit = f"{'above' if too_many else 'within'} --max-error-rate {max_error_rate:.2%}"
    by_type = f": {', '.join(f'{t} {n}' for t, n in types.most_common())}" if types else ""
    return (EXIT_TOO_MANY_ERRORS if too_many else EXIT_CLEAN), f"{rate}, {limit}{by_type}"


#: What to do about shards a rerun would read the same way (ShardOutcome.retryable false).
NOT_RETRYABLE = (
    "a rerun reads the same bytes: replace those files or leave them out (--accept-truncated labels what a tar that "
    "ends early holds)"
)


def rerun_hint(unfinished: list[ShardOutcome]) -> str:
    """What a rerun can do for the shards not complete: retry them, or nothing until their files change."""
    fixable = sum(o.retryable for o in unfinished)
    if fixable == len(unfinished):
        return "rerun to retry"
    if not fixable:
        return NOT_RETRYABLE
    return f"rerun to retry {fixable} of them; for the other {len(unfinished) - fixable}, {NOT_RETRYABLE}"


def run_entry(figures: dict[str, Any], code: int) -> dict[str, Any]:
    """This run, as the history table keeps it."""
    kept = ("images", "labels", "errors", "shards_scored", "shards_skipped", "wall_s", "images_per_s")
    return {
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "emonet_batch": __version__,
        "exit_code": code,
        **{k: figures[k] for k in kept},
    }


def build_manifest(
    config: ScoreConfig,
    info: ModelInfo,
    shards: list[Shard],
    outcomes: dict[str, ShardOutcome],
    figures: dict[str, Any],
    warnings: list[str],
    exit: tuple[int, str],
) -> dict[str, Any]:
    """manifest.json: this run's summary; its shards' outcomes are in MANIFEST_SHARDS (`shard_table`)."""
    totals = {k: sum(getattr(o, k) for o in outcomes.values()) for k in ("samples", "labels", "errors")}
    return {
        "emonet_batch": __version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {
            "id": info.model_id,
            "heads": len(info.heads),
            "head_size": info.head_size,
            "precision": info.precision,
            "image_size": info.image_size,
            "source": info.record.get("sources", {}).get("heads", "not recorded"),
            # the recorded error of decode and precision together (model.json `decode_parity`)
            "pipeline_error": pipeline_error(info.record),
        },
        "input_shards": len(shards),
        "options": manifest_options(config),
        "totals": totals,
        "shard_counts": dict(sorted(Counter(o.status for o in outcomes.values()).items())),
        # committed with what they hold though their tar ends early (--accept-truncated)
        "accepted_truncated": sorted(o.shard for o in outcomes.values() if TRUNCATED in o.error_types),
        "figures": figures,
        "warnings": warnings,
        "exit": {"code": exit[0], "reason": exit[1]},
        "tables": {"shards": MANIFEST_SHARDS, "runs": MANIFEST_RUNS},
    }


def pipeline_error(record: dict[str, Any]) -> dict[str, float] | None:
    """max |score difference| against the reference preprocessing and fp32, with each JPEG decode."""
    measured = record.get("decode_parity")
    if not measured:
        return None
    return {f"{decode}_decode": measured[decode]["max_abs_score_diff"] for decode in ("fast", "exact")}


def shard_table(shards: list[Shard], outcomes: dict[str, ShardOutcome]) -> pa.Table:
    """One row per input shard, in input order: its outcome in this run (`skipped`: committed earlier)."""
    rows = [outcomes[s.shard_id] for s in shards]
    return pa.table(
        {
            "shard": pa.array([o.shard for o in rows], pa.string()),
            "input": pa.array([o.input for o in rows], pa.string()),
            "status": pa.array([o.status for o in rows], pa.string()).dictionary_encode(),
            "skipped": pa.array([o.skipped for o in rows], pa.bool_()),
            **{k: pa.array([getattr(o, k) for o in rows], pa.int64()) for k in ("samples", "labels", "errors")},
            "reason": pa.array([o.reason for o in rows], pa.string()),
            "retryable": pa.array([None if o.status == "complete" else o.retryable for o in rows], pa.bool_()),
            "error_types": pa.array([json.dumps(o.error_types) for o in rows], pa.string()),
        }
    )


def write_manifest(fs, output: str, manifest: dict[str, Any], shards: pa.Table, runs: list[dict[str, Any]]) -> None:
    """The two tables, then the summary that names them."""
    write_bytes(fs, join(output, MANIFEST_SHARDS), parquet_bytes(shards))
    write_bytes(fs, join(output, MANIFEST_RUNS), parquet_bytes(pa.Table.from_pylist(runs)))
    write_bytes(fs, join(output, MANIFEST), json.dumps(manifest, indent=1).encode())


def earlier_runs(fs, output: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The run history a run adds to (none yet: empty), and a warning when it cannot be read (the history then
    starts again with this run)."""
    try:
        with fs.open(join(output, MANIFEST_RUNS), "rb") as file:
            return pq.read_table(file).to_pylist(), []
    except NOT_FOUND:
        return [], []
    except pa.ArrowInvalid as exc:
        return [], [f"{MANIFEST_RUNS} cannot be read ({first_line(exc)}); the run history starts again with this run"]

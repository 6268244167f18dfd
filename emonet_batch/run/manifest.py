"""A run's figures, its exit code and manifest.json."""

from __future__ import annotations

import time
from typing import Any

from .. import __version__
from ..job.commit import ShardOutcome
from ..job.inputs import Shard
from ..model.record import ModelInfo
from .config import ScoreConfig
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
        "stages": stage_stats,
    }


def exit_code(outcomes: dict[str, ShardOutcome], max_error_rate: float) -> int:
    if any(o.status != "complete" for o in outcomes.values()):
        return EXIT_FAILED
    samples = sum(o.samples for o in outcomes.values())
    errors = sum(o.errors for o in outcomes.values())
    return EXIT_TOO_MANY_ERRORS if samples and errors / samples > max_error_rate else EXIT_CLEAN


def build_manifest(
    config: ScoreConfig, info: ModelInfo, shards: list[Shard], outcomes, figures, warnings: list[str]
) -> dict[str, Any]:
    totals = {k: sum(getattr(o, k) for o in outcomes.values()) for k in ("samples", "labels", "errors")}
    labels, engine = config.labels, config.engine
    return {
        "emonet_batch": __version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {
            "id": info.model_id,
            "heads": len(info.heads),
            "head_size": info.head_size,
            "precision": info.precision,
            "image_size": info.image_size,
        },
        "inputs": [s.display_url for s in shards],
        "options": {
            "meta_fields": list(labels.meta_fields),
            "centered": labels.centered,
            "softmax": labels.softmax,
            "embedding": labels.embedding,
            "batch_size": engine.batch_size,
            "workers": engine.workers,
            "gpus_per_worker": engine.gpus_per_worker,
            "max_error_rate": config.max_error_rate,
            "fast_decode": labels.fast_decode,
            "max_pixels": labels.max_pixels,
        },
        "totals": totals,
        "shards": {s.shard_id: outcomes[s.shard_id].as_dict() for s in shards},
        "figures": figures,
        "warnings": warnings,
    }

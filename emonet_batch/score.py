"""The scoring job: plan -> skip committed shards -> Ray Data stream -> commit per shard -> manifest.

    read (CPU tasks, one per shard) -> decode (CPU tasks) -> infer (actor pool) -> driver: commit

The driver consumes the stream and commits a shard as soon as all of its rows (known from the shard's
`end` row) have arrived, so shards land while the run goes on and a crash loses only shards in flight.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import __version__
from .accuracy import accuracy_problems
from .commit import COMMITS, ERRORS, LABELS, ShardOutcome, commit_shard, reserved_columns
from .config import ScoreConfig
from .errors import EmonetError, UsageError
from .inputs import Shard, expand_inputs
from .model import ModelInfo, load_model_info
from .progress import Counters, Progress
from .read import END, SAMPLE
from .storage import check_output, filesystem, join, read_json_files, redact_url, write_bytes

MANIFEST = "manifest.json"
# exit codes; 2 (usage error) comes from UsageError in the CLI
EXIT_CLEAN, EXIT_FAILED, EXIT_TOO_MANY_ERRORS = 0, 1, 3


@dataclass
class RunResult:
    outcomes: dict[str, ShardOutcome]
    figures: dict[str, Any]
    manifest: dict[str, Any]
    exit_code: int
    stats: dict[str, Any] = field(default_factory=dict)
    report: str | None = None  # where report.html was written


def run_score(config: ScoreConfig) -> RunResult:
    """Score every shard of `config.inputs` not yet committed under `config.output`."""
    _check_config(config)
    started = time.perf_counter()
    info = load_model_info(config.model)
    check_accuracy(info, config)
    clash = sorted(set(config.meta_fields) & reserved_columns(info, config))
    if clash:
        raise UsageError(f"--meta-fields would overwrite output columns: {', '.join(clash)}")
    shards = expand_inputs(config.inputs, config.storage)
    fs, output = filesystem(config.output, config.storage)
    check_output(fs, output, redact_url(config.output))
    if config.overwrite:
        clear_output(fs, output)
    committed = read_json_files(fs, join(output, COMMITS))
    check_same_model(fs, output, committed, info)

    outcomes = {s.shard_id: skipped_outcome(s, committed[s.shard_id]) for s in shards if s.shard_id in committed}
    todo = [s for s in shards if s.shard_id not in committed]
    counters = Counters(total_shards=len(shards), skipped=len(outcomes))
    stage_stats = ""
    if todo:
        progress = Progress(counters, config.progress)
        try:
            stage_stats = stream_and_commit(todo, info, config, fs, output, outcomes, counters, progress)
        except PipelineError as exc:
            # committed shards stay committed; the rest is recorded as failed and retried by the next run
            for shard in todo:
                outcomes.setdefault(shard.shard_id, ShardOutcome(shard.shard_id, shard.display_url, "failed", reason=str(exc)))
        finally:
            progress.close()
    figures = run_figures(outcomes, counters, time.perf_counter() - started, stage_stats)
    manifest = build_manifest(config, info, shards, outcomes, figures)
    write_bytes(fs, join(output, MANIFEST), json.dumps(manifest, indent=1).encode())
    result = RunResult(outcomes, figures, manifest, exit_code(outcomes, config.max_error_rate))
    if config.stats and any(o.status == "complete" for o in outcomes.values()):
        from .stats import compute_stats

        result.stats = compute_stats(config.output, config.storage)
        if config.report:
            from .report import build_report

            result.report = build_report(config.output, config.storage, config.gallery, result.stats)
    return result


def _check_config(config: ScoreConfig) -> None:
    if config.batch_size < 1 or config.decode_batch_size < 1:
        raise UsageError("batch sizes must be at least 1")
    if config.workers is not None and config.workers < 1:
        raise UsageError("--workers must be at least 1")
    if config.gpus_per_worker < 0:
        raise UsageError("--gpus-per-worker cannot be negative")
    if not 0 <= config.max_error_rate <= 1:
        raise UsageError("--max-error-rate must be between 0 and 1")


def check_accuracy(info: ModelInfo, config: ScoreConfig) -> None:
    """Refuse a reduced-precision model whose recorded error against fp32 exceeds the documented limits."""
    problems = accuracy_problems(info.record)
    if problems and not config.allow_inaccurate_model:
        raise UsageError(
            f"model {config.model} ({info.precision}) records {'; '.join(problems)} against fp32; "
            "re-export it at a higher precision, or pass --allow-inaccurate-model to score with it anyway"
        )


def clear_output(fs, output: str) -> None:
    """--overwrite: remove what a run writes (and only that), so the output starts afresh."""
    for name in (LABELS, ERRORS, COMMITS, "stats"):
        if fs.exists(join(output, name)):
            fs.rm(join(output, name), recursive=True)
    if fs.exists(join(output, MANIFEST)):
        fs.rm(join(output, MANIFEST))


def check_same_model(fs, output: str, committed: dict[str, Any], info: ModelInfo) -> None:
    """Refuse to mix labels of two models in one output."""
    ids = {record.get("model_id") for record in committed.values()}
    try:
        ids.add(json.loads(fs.cat_file(join(output, MANIFEST)))["model"]["id"])
    except (FileNotFoundError, KeyError, ValueError):
        pass
    other = sorted(i for i in ids if i and i != info.model_id)
    if other:
        raise UsageError(
            f"{redact_url(output)} holds labels from another model ({other[0][:12]}...); "
            f"this model is {info.model_id[:12]}...; pass --overwrite to start afresh"
        )


def skipped_outcome(shard: Shard, record: dict[str, Any]) -> ShardOutcome:
    return ShardOutcome(shard.shard_id, shard.display_url, "complete", record["samples"], record["labels"], record["errors"], skipped=True)


class PipelineError(EmonetError):
    """The Ray pipeline itself failed (a stage raised, an actor could not start)."""


class ShardCollector:
    """Gathers the streamed rows of each shard until its `end` row and all its samples have arrived."""

    def __init__(self):
        self.parts: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)
        self.seen: dict[str, set[int]] = defaultdict(set)
        self.ends: dict[str, dict[str, Any]] = {}
        self.images_by_worker: dict[str, int] = defaultdict(int)

    def add(self, batch: dict[str, np.ndarray]) -> list[str]:
        """Take a batch; return the shards it completed."""
        ready = []
        shards = batch["shard"]
        for shard in np.unique(shards):
            mask = shards == shard
            is_end = batch["kind"][mask] == END
            if is_end.any():
                row = np.flatnonzero(mask)[np.flatnonzero(is_end)[0]]
                reason = batch["message"][row]
                self.ends[shard] = {
                    "count": int(batch["count"][row]),
                    "status": str(batch["error_type"][row]),
                    "reason": str(reason) if isinstance(reason, str) else None,
                }
                mask = mask & (batch["kind"] != END)
            mask &= self._first_time(shard, batch["seq"], mask)
            if mask.any():
                self.parts[shard].append({name: column[mask] for name, column in batch.items()})
                for worker in batch["worker"][mask & (batch["kind"] == SAMPLE)]:
                    self.images_by_worker[str(worker)] += 1
            if shard in self.ends and len(self.seen[shard]) == self.ends[shard]["count"]:
                ready.append(shard)
        return ready

    def _first_time(self, shard: str, seqs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Rows not seen before: a task Ray re-runs after losing a node may deliver rows again."""
        seen = self.seen[shard]
        fresh = np.zeros(len(seqs), dtype=bool)
        for i in np.flatnonzero(mask):
            seq = int(seqs[i])
            if seq not in seen:
                seen.add(seq)
                fresh[i] = True
        return fresh

    def pop(self, shard: str, columns: list[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        parts = self.parts.pop(shard, [])
        self.seen.pop(shard, None)
        rows = {name: np.concatenate([p[name] for p in parts]) if parts else np.empty(0, dtype=object) for name in columns}
        return rows, self.ends.pop(shard)


def stream_and_commit(todo, info, config, fs, output, outcomes, counters, progress) -> str:
    import ray

    from .pipeline import build_dataset, ensure_ray

    ensure_ray()
    dataset = build_dataset(todo, info, config)
    by_id = {s.shard_id: s for s in todo}
    collector = ShardCollector()
    columns = ["kind", "shard", "seq", "key", "meta", "stage", "error_type", "message", "scores"] + (["embedding"] if config.embedding else [])
    try:
        for batch in dataset.iter_batches(batch_format="numpy", batch_size=None, prefetch_batches=1):
            for shard_id in collector.add(batch):
                rows, end = collector.pop(shard_id, columns)
                outcome = commit_shard(fs, output, shard_id, rows, end, info, config, by_id[shard_id].display_url)
                outcomes[shard_id] = outcome
                counters.shards_done += 1
                counters.images += outcome.samples
                counters.errors += outcome.errors
            progress.update()
    except ray.exceptions.RayError as exc:
        raise PipelineError(f"the pipeline failed: {root_cause(exc)}") from None
    missing = [s.shard_id for s in todo if s.shard_id not in outcomes]
    if missing:  # the stream ended without a shard's end row: a bug, never a silent loss
        raise EmonetError(f"the pipeline ended without finishing shards: {', '.join(missing)}")
    counters.images_by_worker = dict(collector.images_by_worker)
    try:
        return dataset.stats()
    except Exception:  # stats are a nicety; never fail a finished run over them
        return ""


def root_cause(exc: BaseException) -> str:
    """The innermost error's type and first line: Ray wraps stage errors in several layers."""
    while getattr(exc, "cause", None) is not None or exc.__cause__ is not None:
        exc = getattr(exc, "cause", None) or exc.__cause__
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:500]


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


def build_manifest(config: ScoreConfig, info: ModelInfo, shards: list[Shard], outcomes, figures) -> dict[str, Any]:
    totals = {k: sum(getattr(o, k) for o in outcomes.values()) for k in ("samples", "labels", "errors")}
    return {
        "emonet_batch": __version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {"id": info.model_id, "heads": len(info.heads), "head_size": info.head_size, "precision": info.precision,
                  "image_size": info.image_size},  # fmt: skip
        "inputs": [s.display_url for s in shards],
        "options": {
            "meta_fields": list(config.meta_fields), "centered": config.centered, "softmax": config.softmax,
            "embedding": config.embedding, "batch_size": config.batch_size, "workers": config.workers,
            "gpus_per_worker": config.gpus_per_worker, "max_error_rate": config.max_error_rate,
            "fast_decode": config.fast_decode, "max_pixels": config.max_pixels,
        },  # fmt: skip
        "totals": totals,
        "shards": {s.shard_id: outcomes[s.shard_id].as_dict() for s in shards},
        "figures": figures,
    }

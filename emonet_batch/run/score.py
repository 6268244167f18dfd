"""The run: model and source -> preflight -> skip committed shards -> claim the label options -> stream through
the Ray edge (the plan: edge/plan.py) -> collect, assemble and commit -> manifest -> stats and report.

The driver follows the pieces' receipts and has a shard assembled and committed as soon as all of its rows (known
from the shard's `end` row) are written, so shards land while the run goes on and a crash loses only shards in
flight. No row reaches the driver. ARCHITECTURE.md maps where each step runs.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ..analysis.stats import not_complete_shards
from ..analysis.summary import counted, listed
from ..errors import EmonetError, PipelineError, UsageError
from ..job.collect import ShardCollector
from ..job.commit import ShardOutcome, StagedShard, discard_attempt
from ..job.config import EMBEDDINGS
from ..job.fetch import is_remote, local_model
from ..job.inputs import Shard, without
from ..job.layout import reserved_columns
from ..job.preflight import check_credentials, check_output, check_ray_address, check_runtime, left_out_warning
from ..job.sources import Source, open_source
from ..job.storage import filesystem, redact_url, report_storage_retries
from ..model.accuracy import accuracy_problems, fast_decode_problems
from ..model.record import ModelInfo, load_model_info
from .commits import Committer, try_checkpoint
from .config import ScoreConfig
from .manifest import (
    EXIT_CLEAN,
    EXIT_FAILED,
    build_manifest,
    earlier_runs,
    exit_status,
    run_entry,
    run_figures,
    shard_table,
    write_manifest,
)
from .progress import Counters, Progress
from .resume import (
    check_label_options,
    check_ours,
    claim_label_options,
    clear_output,
    label_options,
    load_commits,
    repair,
    split_committed,
)


@dataclass
class RunResult:
    outcomes: dict[str, ShardOutcome]
    figures: dict[str, Any]
    manifest: dict[str, Any]
    exit_code: int
    exit_reason: str
    warnings: list[str] = field(default_factory=list)  # what the operator should know (records redone, ...)
    stats: dict[str, Any] = field(default_factory=dict)
    report: str | None = None  # where report.html was written


def run_score(config: ScoreConfig, require_provider: bool = True) -> RunResult:
    """Score every shard of `config.inputs` not yet committed under `config.output`.

    require_provider=False only where GPUs are simulated (tests): see edge.plan.build_dataset."""
    check_config(config)
    report_storage_retries()
    counters = Counters()
    progress = Progress(counters, config.presentation.progress)
    try:
        return score_with_progress(config, require_provider, counters, progress)
    finally:
        progress.close()


def score_with_progress(config: ScoreConfig, require_provider: bool, counters: Counters, progress: Progress):
    progress.phase("checking the model", logged=False)
    check_runtime(gpu=config.engine.gpus_per_worker > 0)
    check_credentials([*config.inputs, config.output, config.model])
    check_ray_address(os.environ.get("RAY_ADDRESS"))
    # a fetched model was verified by the fetch; a local one is hashed here
    info = load_model_info(
        local_model(config.model, config.storage, config.storage.model_cache), verify=not is_remote(config.model)
    )
    check_model(info, config)
    config, decode_note = choose_decode(info, config)
    progress.phase("listing the inputs", logged=False)
    source, shards = open_source(
        config.reads, config.inputs, config.output, config.model, info, config.labels, config.engine, config.storage
    )
    config = replace(config, labels=source.labels(config.labels))
    clash = sorted(
        set(config.labels.meta_fields) & reserved_columns(info.heads, config.labels.centered, config.labels.softmax)
    )
    if clash:
        raise UsageError(f"--meta-fields would overwrite output columns: {', '.join(clash)}")
    progress.phase(f"checking the output and {len(shards)} inputs", logged=False)
    fs, output = filesystem(config.output, config.storage)
    display = redact_url(config.output)
    check_output(fs, output, display)
    present = check_ours(fs, output, display)
    left_out = []
    if config.overwrite:
        left_out = source.check(shards)  # before anything is removed: a run that cannot start changes nothing
        clear_output(fs, output, present)
    repaired = repair(fs, output) if config.repair else []
    committed, warnings = load_commits(fs, output)
    warnings = decode_note + repaired + warnings
    outcomes, todo = split_committed(shards, committed)
    if not config.overwrite:
        left_out = source.check(todo)
    shards, todo = without(shards, left_out), without(todo, left_out)
    warnings += left_out_warning(left_out) + not_in_the_source(config, shards)
    wanted = label_options(info, config.labels)
    recorded = check_label_options(fs, output, wanted)  # a run refused for its options starts nothing
    if todo:
        start_ray(config, progress)
    if not recorded:  # claimed once Ray is up: a run that cannot attach leaves no record of options it never used
        claim_label_options(fs, output, wanted, committed)

    counters.total_shards, counters.skipped = len(shards), len(outcomes)
    stage_stats = ""
    if todo:
        try:
            stage_stats = stream_and_commit(
                todo, source, info, config, fs, output, outcomes, counters, progress, warnings, require_provider
            )
        except PipelineError as exc:
            # committed shards stay committed; the rest is recorded as failed and retried by the next run
            for shard in todo:
                outcomes.setdefault(
                    shard.shard_id, ShardOutcome(shard.shard_id, shard.display_url, "failed", reason=str(exc))
                )
        progress.finished()
    warnings += checkpoint_commits(fs, output, committed, outcomes)
    warnings += [f"{o.shard}: {o.reason}" for o in outcomes.values() if o.status == "complete" and o.reason]
    absent = absent_meta_warnings(config.labels.meta_fields, [o for o in outcomes.values() if not o.skipped])
    warnings += absent
    history, unreadable = earlier_runs(fs, output)
    warnings += unreadable
    figures = run_figures(outcomes, counters, counters.elapsed, stage_stats)
    exit = exit_status(outcomes, config.max_error_rate)
    if config.strict_meta and absent and exit[0] == EXIT_CLEAN:
        exit = EXIT_FAILED, f"--strict-meta: {'; '.join(absent)}"
    # what the source adds (a rescore: the output it read)
    manifest = build_manifest(config, info, shards, outcomes, figures, warnings, exit) | source.manifest_fields()
    write_manifest(fs, output, manifest, shard_table(shards, outcomes), [*history, run_entry(figures, exit[0])])
    result = RunResult(outcomes, figures, manifest, exit[0], exit[1], warnings)
    if config.presentation.stats and any(o.status == "complete" for o in outcomes.values()):
        progress.phase("writing stats and the report")
        analyse(config, result)
    return result


def start_ray(config: ScoreConfig, progress: Progress) -> None:
    """Ray started or attached to, holding what the actors need (waiting for a cluster's autoscaler to grow it)."""
    from ..edge.capacity import ensure_capacity, needed_bundles
    from ..edge.runtime import ensure_ray

    progress.phase("starting Ray")
    attached = ensure_ray(config.presentation.verbose)
    ensure_capacity(needed_bundles(config.engine), config.engine.wait_for_resources, attached, progress.phase)


def checkpoint_commits(fs, output: str, committed: dict[str, Any], outcomes: dict[str, ShardOutcome]) -> list[str]:
    """A commit checkpoint after a run that committed shards or found records no checkpoint held, so that the next
    resume reads only the records written after it (job/commitlog.py). A failure costs that resume its reads only:
    a warning, never the run."""
    if not committed and not any(o.status == "complete" and not o.skipped for o in outcomes.values()):
        return []
    return try_checkpoint(fs, output)


def not_in_the_source(config: ScoreConfig, shards: list[Shard]) -> list[str]:
    """A rescore carries the shards its source committed (`shards`): those the source's last run left not complete
    have no embeddings to rescore, which the operator is told rather than left to notice in the counts."""
    if config.reads != EMBEDDINGS:
        return []
    fs, root = filesystem(config.inputs[0], config.storage)
    committed = {shard.shard_id for shard in shards}
    gaps = [gap for gap in not_complete_shards(fs, root, None) if gap["shard"] not in committed]
    if not gaps:
        return []
    named = listed([f"{gap['shard']} {gap['status']}" for gap in gaps])
    return [
        f"not in this rescore: {counted(len(gaps), 'shard')} its source's last run left not complete ({named}); "
        "rescore again once the source has committed them"
    ]


def absent_meta_warnings(fields: tuple[str, ...], scored: list[ShardOutcome]) -> list[str]:
    """A --meta-fields name that no sample scored in this run has (a typo, most likely)."""
    with_rows = [o for o in scored if o.labels]
    return [
        f"--meta-fields {name}: no sample scored in this run has it, so its column is all null"
        for name in fields
        if with_rows and all(name in o.absent_meta for o in with_rows)
    ]


def analyse(config: ScoreConfig, result: RunResult) -> None:
    """Stats (and the report) of the output after the run."""
    from ..analysis.stats import compute_stats

    result.stats = compute_stats(config.output, config.storage)
    if config.presentation.report:
        from ..analysis.report import build_report

        result.report = build_report(config.output, config.storage, config.presentation.gallery, result.stats)


def check_config(config: ScoreConfig) -> None:
    engine = config.engine
    if engine.batch_size < 1 or engine.decode_batch_size < 1:
        raise UsageError("batch sizes must be at least 1")
    if engine.workers is not None and engine.workers < 1:
        raise UsageError("--workers must be at least 1")
    if engine.gpus_per_worker < 0:
        raise UsageError("--gpus-per-worker cannot be negative")
    if engine.execution_provider and engine.gpus_per_worker <= 0:  # else the run would go to the CPU unasked
        raise UsageError(
            f"--execution-provider {engine.execution_provider} is for GPU actors: give --gpus-per-worker too "
            "(1: a GPU each)"
        )
    if engine.threads_per_worker is not None and engine.gpus_per_worker > 0:
        raise UsageError("--threads-per-worker is for CPU actors; a GPU actor runs its graph on one thread")
    if engine.trt_precision and engine.execution_provider != "tensorrt":
        raise UsageError(f"--trt-precision {engine.trt_precision} is for --execution-provider tensorrt")
    if not 0 <= config.max_error_rate <= 1:
        raise UsageError("--max-error-rate must be between 0 and 1")


def check_model(info: ModelInfo, config: ScoreConfig) -> None:
    """Refuse a reduced-precision model whose recorded error against fp32 exceeds the documented limits."""
    problems = accuracy_problems(info.record)
    if problems and not config.allow_inaccurate_model:
        raise UsageError(
            f"model {config.model} ({info.precision}) records {'; '.join(problems)} against fp32; "
            "re-export it at a higher precision, or pass --allow-inaccurate-model to score with it anyway"
        )


def choose_decode(info: ModelInfo, config: ScoreConfig) -> tuple[ScoreConfig, list[str]]:
    """The exact JPEG decode, with a note saying why, when the model's recorded error with the fast decode exceeds
    the accuracy limits (model.accuracy.fast_decode_problems); the config as given otherwise."""
    if info.heads_only or config.labels.exact_decode:
        return config, []
    problems = fast_decode_problems(info.record)
    if not problems:
        return config, []
    note = (
        f"decoding JPEGs at full size (--exact-decode): this model records {'; '.join(problems)}, over the "
        "accuracy limits"
    )
    return replace(config, labels=replace(config.labels, exact_decode=True)), [note]


def hand_over(
    whole: list[str], collector: ShardCollector, by_id: dict[str, Shard], assembly
) -> list[tuple[Shard, StagedShard]]:
    """Shards made whole: those the worker that scored them staged itself (job/whole.py), to commit now; the
    others' pieces to the assembly (edge/assemble.ShardAssembly)."""
    staged_by_workers = []
    for shard_id in whole:
        shard = by_id[shard_id]
        pieces, end, staged = collector.pop(shard_id)
        if staged is None:
            assembly.submit(shard, pieces, end)
        else:
            staged_by_workers.append((shard, StagedShard.from_json(staged, shard)))
    return staged_by_workers


def stream_and_commit(
    todo: list[Shard],
    source: Source,
    info: ModelInfo,
    config: ScoreConfig,
    fs,
    output: str,
    outcomes: dict[str, ShardOutcome],
    counters: Counters,
    progress: Progress,
    warnings: list[str],
    require_provider: bool,
) -> str:
    """Run the plan over `todo` (Ray started: start_ray), committing each shard as it becomes whole; Ray Data's stage
    figures."""
    from ..edge.assemble import AssemblyContext, ShardAssembly
    from ..edge.plan import Pieces, build_dataset
    from ..edge.stream import result_batches, stage_stats
    from ..edge.waits import WaitWatcher, board_name

    attempt = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"  # this run's staging
    pieces = Pieces(config.output, config.storage, attempt)
    dataset = build_dataset(
        todo, source, config.model, info, config.labels, config.engine, config.storage, pieces, require_provider
    )
    progress.phase("starting the inference actors")
    by_id = {s.shard_id: s for s in todo}
    collector = ShardCollector()
    assembly = ShardAssembly(AssemblyContext(config.output, config.storage, info, config.labels, attempt))
    committer = Committer(fs, output, attempt, outcomes, counters)
    watcher = WaitWatcher(board_name(attempt), counters)
    driver = {"collect": 0.0, "commit": 0.0}  # the driver's own CPU seconds per step
    driver_started = time.process_time()

    def commit(staged_shards):
        started = time.thread_time()
        committer.submit(staged_shards)
        committer.collect()
        driver["commit"] += time.thread_time() - started

    try:
        for receipts in result_batches(dataset):
            if counters.first_batch_s is None:
                counters.first_batch_s = counters.elapsed
                progress.phase("scoring")
            started = time.thread_time()
            staged_by_workers = hand_over(collector.add(receipts.to_pylist()), collector, by_id, assembly)
            driver["collect"] += time.thread_time() - started
            commit(staged_by_workers + assembly.finished())
            counters.scored = collector.samples_seen
            if committer.output_full:  # leaving the stream stops the plan: no new shard
                break
        while assembly.pending():
            commit(assembly.finished(wait=True))
    finally:
        committer.close()
        watcher.close()
    full = committer.output_full  # why the output cannot be written
    if full:
        progress.phase("stopped: the output is full")
        warnings.append(f"the output ran out of space; no shard was started after that ({full})")
        for shard in todo:
            outcomes.setdefault(
                shard.shard_id,
                ShardOutcome(shard.shard_id, shard.display_url, "failed", reason="not finished: the output is full"),
            )
    warnings.extend(committer.warnings)
    counters.scoring_s = counters.elapsed - (counters.first_batch_s or 0.0)
    # the commit threads' CPU is the driver's too; the rest of it is Ray Data's executor and batch iteration threads
    driver["commit"] += committer.cpu_seconds
    driver["ray_data_driver"] = time.process_time() - driver_started - driver["collect"] - driver["commit"]
    counters.cpu_seconds = {**collector.cpu_seconds, **driver}
    counters.cpu_seconds["assemble"] += assembly.cpu_seconds
    try:
        discard_attempt(fs, output, attempt)
    except OSError:  # only leftovers of this attempt: never worth failing a finished run over
        pass
    missing = [s.shard_id for s in todo if s.shard_id not in outcomes]
    if missing:  # the stream ended without a shard's end row: a bug, never a silent loss
        raise EmonetError(f"the pipeline ended without finishing shards: {', '.join(missing)}")
    counters.images_by_worker = dict(collector.images_by_worker)
    return stage_stats(dataset)

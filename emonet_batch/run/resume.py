"""Resume: which shards an earlier run committed, and whether this run may add to its output.

Functions over the output's records (no Ray), so the skip logic is tested on its own.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..errors import UsageError
from ..job.commit import ShardOutcome, publish
from ..job.commitlog import log_change, read_records
from ..job.config import LabelOptions
from ..job.inputs import Shard, normalised_location
from ..job.layout import (
    COMMITS,
    LABEL_OPTIONS,
    LABELS,
    MANIFEST,
    RUN_OUTPUTS,
    commit_file,
    error_file,
    label_file,
    shard_id_of,
    staged_file,
)
from ..job.storage import NOT_FOUND, create_only, join, json_object, redact_url
from ..job.verify import damaged_shards
from ..model.record import ModelInfo
from .config import label_flags, option_value

#: Above this many records to check, one listing of labels/ is cheaper than a request each.
LISTING_OVER = 100


def split_committed(shards: list[Shard], committed: dict[str, Any]) -> tuple[dict[str, ShardOutcome], list[Shard]]:
    """(outcomes of the shards an earlier run committed, the shards still to score), in input order.

    A shard is skipped only when its record names this very input; a record of another input under the
    same id (a collision of the id's short hash) is refused rather than taken for this shard's."""
    done = {}
    for shard in shards:
        record = committed.get(shard.shard_id)
        if record is None:
            continue
        if record["location"] != normalised_location(shard.url):
            raise UsageError(
                f"shard id {shard.shard_id} is committed in this output for another input "
                f"({redact_url(record['location'])}), not {shard.display_url}; use another --output"
            )
        done[shard.shard_id] = skipped_outcome(shard, record)
    return done, [s for s in shards if s.shard_id not in done]


def skipped_outcome(shard: Shard, record: dict[str, Any]) -> ShardOutcome:
    return ShardOutcome(
        shard.shard_id,
        shard.display_url,
        "complete",
        record["samples"],
        record["labels"],
        record["errors"],
        skipped=True,
        error_types=record.get("error_types", {}),
    )


def check_ours(fs, output: str, display: str) -> set[str]:
    """The names at the output's top level (one listing); refused when they hold a `labels/` (or another name a run
    writes) that no run of this tool wrote, as a dataset's own folder may (YOLO keeps `labels/`): a run would mix
    its files with them, and --overwrite would remove them."""
    try:
        names = {path.rstrip("/").rsplit("/", 1)[-1] for path in fs.ls(output, detail=False)}
    except NOT_FOUND:
        return set()
    finally:
        fs.invalidate_cache(output)  # a listing kept would answer later existence checks from this moment
    if names & {LABEL_OPTIONS, COMMITS, MANIFEST}:
        return names  # an output of this tool
    foreign = sorted(names & set(RUN_OUTPUTS))
    if foreign:
        raise UsageError(
            f"{display} holds {', '.join(foreign)} that no emonet-batch run wrote (it has no "
            f"{LABEL_OPTIONS}): give the labels another --output"
        )
    return names


def clear_output(fs, output: str, present: set[str]) -> None:
    """--overwrite: remove what a run writes (and only that) of the output's top-level names `present`
    (check_ours), so the output starts afresh."""
    for name in RUN_OUTPUTS:
        if name in present:
            path = join(output, name)
            fs.rm(path, recursive=fs.isdir(path))


def label_options(info: ModelInfo, labels: LabelOptions) -> dict[str, Any]:
    """What shapes an output's label files: recorded by its first run, required of every later one."""
    return {
        "model_id": info.model_id,
        "heads": list(info.heads),
        **{name: option_value(labels, name) for name in label_flags()},
    }


def claim_label_options(fs, output: str, wanted: dict[str, Any], committed: dict[str, Any]) -> None:
    """Record what shapes this output's labels (create-only, so of two runs starting at once on an empty
    output one claims it and the other compares), or refuse a run that would change it."""
    path = join(output, LABEL_OPTIONS)
    if create_only(fs, path, json.dumps(wanted, indent=1).encode()):
        if committed:
            fs.rm(path)
            raise UsageError(
                f"{redact_url(output)} holds committed labels without a record of their options ({LABEL_OPTIONS} is "
                "missing); pass --overwrite to start afresh"
            )
        return
    check_label_options(fs, output, wanted)


def check_label_options(fs, output: str, wanted: dict[str, Any]) -> bool:
    """Whether the output records these label options (False: it records none); a run that would change them is
    refused. Reads only, so a run checks them before it starts Ray and claims them after when none were recorded."""
    display = redact_url(output)
    try:
        recorded = json_object(fs, join(output, LABEL_OPTIONS))
    except NOT_FOUND:
        return False
    except ValueError:
        raise UsageError(f"{display}: {LABEL_OPTIONS} cannot be read; pass --overwrite to start afresh") from None
    if recorded.get("model_id") != wanted["model_id"]:
        raise UsageError(
            f"{display} holds labels from another model ({_shown(recorded.get('model_id'))}), this model is "
            f"{_shown(wanted['model_id'])}; pass --overwrite to start afresh, or use another --output"
        )
    flags = {"heads": "--model (its heads)", **label_flags()}
    for name, value in wanted.items():
        if recorded.get(name) != value:
            raise UsageError(
                f"{display} was scored with {flags[name]} {_shown(recorded.get(name))}, this run would give "
                f"{_shown(value)}; keep the option, pass --overwrite to start afresh, or use another --output"
            )
    return True


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str) and len(value) == 64:  # a model id
        return value[:12] + "..."
    return json.dumps(value)[:80]


def load_commits(fs, output: str) -> tuple[dict[str, Any], list[str]]:
    """(shard id -> commit record, warnings). A record that cannot be read counts as not committed: it is
    removed so the shard is scored again. A record read from its file (not from a checkpoint, which a run writes
    between its commits) whose files never reached labels/ (the run stopped between its record and the move) gets
    them published from its staging, when their hashes still match."""
    found = read_records(fs, output)
    records, warnings = found.records, found.warnings
    for shard_id in found.unreadable:
        remove_record(fs, output, shard_id)
        warnings.append(f"{shard_id}: its commit record could not be read; the shard is scored again")
    for shard_id in sorted(found.fresh - published_shards(fs, output, found.fresh)):
        record = records[shard_id]
        if staged_intact(fs, output, record):
            publish(fs, output, shard_id, record)
            warnings.append(f"{shard_id}: published the files its commit record names (a run stopped before)")
        else:
            warnings.append(f"{shard_id}: committed, but its label file is missing; `score --repair` redoes it")
    return records, warnings


def published_shards(fs, output: str, shard_ids: set[str]) -> set[str]:
    """Which of `shard_ids` have their label file in labels/: a listing for many, a request each for a few."""
    if len(shard_ids) > LISTING_OVER:
        return {shard_id_of(p) for p in _listing(fs, join(output, LABELS))} & shard_ids
    return {shard_id for shard_id in shard_ids if fs.exists(join(output, label_file(shard_id)))}


def remove_record(fs, output: str, shard_id: str) -> None:
    """Remove a shard's commit record, and say so in the commit log (after: a reader that missed the entry read the
    record before it went)."""
    fs.rm(join(output, commit_file(shard_id)))
    log_change(fs, output, shard_id)


def staged_intact(fs, output: str, record: dict[str, Any]) -> bool:
    for name, digest in record.get("files", {}).items():
        try:
            data = fs.cat_file(join(output, staged_file(str(record.get("attempt")), name)))
        except NOT_FOUND:
            return False
        if hashlib.sha256(data).hexdigest() != digest:
            return False
    return bool(record.get("files"))


def _listing(fs, directory: str) -> list[str]:
    try:
        return fs.ls(directory, detail=False)
    except NOT_FOUND:
        return []


def repair(fs, output: str) -> list[str]:
    """--repair: every shard whose record cannot be read or whose files differ from it loses its record and
    files, so this run scores it again (when it is among the inputs); one warning per shard."""
    warnings = []
    for shard_id, problem in damaged_shards(fs, output).items():
        if fs.exists(join(output, commit_file(shard_id))):
            remove_record(fs, output, shard_id)
        for name in (label_file(shard_id), error_file(shard_id)):
            if fs.exists(join(output, name)):
                fs.rm(join(output, name))
        warnings.append(f"{shard_id}: {problem}; its record and files were removed to score it again")
    return warnings

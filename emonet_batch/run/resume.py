"""Resume: which shards an earlier run committed, and whether this run may add to its output.

Pure functions over the commit records (no Ray), so the skip logic is tested on its own.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import UsageError
from ..job.commit import ShardOutcome
from ..job.inputs import Shard, normalised_location
from ..job.layout import MANIFEST, RUN_OUTPUTS
from ..job.storage import join, redact_url
from ..model.record import ModelInfo


def split_committed(shards: list[Shard], committed: dict[str, Any]) -> tuple[dict[str, ShardOutcome], list[Shard]]:
    """(outcomes of the shards an earlier run committed, the shards still to score), in input order.

    A shard is skipped only when its record names this very input; a record of another input under the
    same id (a collision of the id's short hash) is refused rather than taken for this shard's."""
    done = {}
    for shard in shards:
        record = committed.get(shard.shard_id)
        if record is None:
            continue
        if record.get("location") != normalised_location(shard.url):
            raise UsageError(
                f"shard id {shard.shard_id} is committed in this output for another input "
                f"({redact_url(str(record.get('location')))}), not {shard.display_url}; use another --output"
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
    )


def clear_output(fs, output: str) -> None:
    """--overwrite: remove what a run writes (and only that), so the output starts afresh."""
    for name in RUN_OUTPUTS:
        path = join(output, name)
        if fs.exists(path):
            fs.rm(path, recursive=fs.isdir(path))


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

"""An output's commit records, read through a checkpoint: one Parquet table of the records a run last saw, each with
the version tag its file had in the listing (size and ETag, or modification time).

The records stay the truth. A reader lists `_commits/` (a request per thousand records) and takes a record from the
newest checkpoint only when the listing shows its file with the same tag; every other record is read from its file.
So a record written after the checkpoint is read, one removed since (`--repair`) is gone, one written again has
another tag and is read again, and a checkpoint that cannot be read only costs the reads it would have saved.
Checkpoints have names of their own (time and a random token), so runs writing them at once never collide.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import first_line
from .commit import parquet_bytes
from .layout import CHECKPOINTS, COMMITS, shard_id_of
from .storage import join, listing, read_json_paths, version_tag, write_bytes

#: Checkpoints kept besides the newest (another run may be reading one while a new one is written).
CHECKPOINTS_KEPT = 2
CHECKPOINT_COLUMNS = ("shard", "tag", "record")


def read_records(fs, output: str) -> tuple[dict[str, dict[str, Any]], list[str], list[str]]:
    """(shard id -> commit record, the ids whose record file cannot be read, warnings)."""
    records, _, unreadable, warnings = _read(fs, output)
    return records, unreadable, warnings


def _read(fs, output: str):
    """read_records, with the tag of each record file listed."""
    tags = {
        shard_id_of(path): (path, version_tag(info))
        for path, info in listing(fs, join(output, COMMITS)).items()
        if path.endswith(".json")
    }
    known, warnings = newest_checkpoint(fs, output)
    records = {shard: known[shard][1] for shard, (_, tag) in tags.items() if shard in known and known[shard][0] == tag}
    read, unreadable = read_json_paths(fs, [path for shard, (path, _) in tags.items() if shard not in records])
    records.update(read)
    return records, {shard: tag for shard, (_, tag) in tags.items()}, unreadable, warnings


def newest_checkpoint(fs, output: str) -> tuple[dict[str, tuple[str, dict[str, Any]]], list[str]]:
    """shard id -> (its record file's tag, the record) from the newest checkpoint that reads, and warnings."""
    warnings = []
    for path in sorted(listing(fs, join(output, CHECKPOINTS)), reverse=True):
        try:
            with fs.open(path, "rb") as file:
                table = pq.read_table(file, columns=list(CHECKPOINT_COLUMNS))
            return {
                shard: (tag, json.loads(record))
                for shard, tag, record in zip(*(table.column(c).to_pylist() for c in CHECKPOINT_COLUMNS))
            }, warnings
        except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
            warnings.append(f"commit checkpoint {path.rsplit('/', 1)[-1]} cannot be read ({first_line(exc)}); ignored")
    return {}, warnings


def write_checkpoint(fs, output: str) -> str:
    """A checkpoint of every record now in `_commits/` (read through the newest checkpoint), under a name of its
    own; the older ones beyond CHECKPOINTS_KEPT are removed. Its path."""
    records, tags, _, _ = _read(fs, output)
    shards = sorted(records)
    table = pa.table(
        {
            "shard": pa.array(shards, pa.string()),
            "tag": pa.array([tags[s] for s in shards], pa.string()),
            "record": pa.array([json.dumps(records[s]) for s in shards], pa.string()),
        }
    )
    name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(4)}.parquet"
    path = join(output, CHECKPOINTS, name)
    write_bytes(fs, path, parquet_bytes(table))
    for old in sorted(listing(fs, join(output, CHECKPOINTS)), reverse=True)[CHECKPOINTS_KEPT + 1 :]:
        fs.rm(old)
    return path

"""An output's commit records, read through a checkpoint and a log of changes, so that a resume costs a handful of
requests whatever the number of records.

- The log: before a run creates a record, and after it removes one (an unreadable record, `--repair`), it writes an
  empty entry `_commit_log/<hour>/<time>-<token>-<shard-id>` (time-ordered names, a folder per UTC hour).
- A checkpoint: one Parquet table of the records a run saw, each with the version tag its file had (size and ETag,
  or modification time, where known), and in its metadata the time from which a reader must look at the log
  (`log_from`) and the entries after that time it already took in (`log_seen`). A run writes one every
  `checkpoint_interval` commits and at its end; names of their own (time and a random token) keep runs writing them at
  once apart.
- A resume (and stats, report, rescore, nightly) takes the newest checkpoint that reads, lists the log's folders
  from `log_from` on and reads only the records its new entries name. An entry whose record did not exist yet when
  a checkpoint was written (a commit under way) is not taken in, so readers look again until it is old.
- `verify` and `--repair` read through the listing of `_commits/` instead (full=True): the records decide, a record
  is taken from the checkpoint only when the listing shows its file with the same tag, and a record changed without
  the job (removed by hand) is found there.
A checkpoint that cannot be read is ignored with a warning: the reader falls back on the listing.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import first_line
from .layout import CHECKPOINTS, COMMIT_LOG, COMMITS, commit_file, shard_id_of
from .storage import join, listing, parquet_bytes, read_json_paths, subfolders, version_tag, write_bytes

#: Checkpoints kept besides the newest (another run may be reading one while a new one is written).
CHECKPOINTS_KEPT = 2
#: A run writes a checkpoint after this many commits (and at its end), as Delta Lake does every 10 commits of its
#: log: ours are cheap to write (the records since the last one), so a crash leaves at most this many to read.
CHECKPOINT_EVERY = 1000
#: ...and no more often than once per this many records it holds: rewriting a checkpoint costs its size, so an output
#: of a million shards rewrites its checkpoint once per 10,000 commits (a constant cost per commit at any size).
RECORDS_PER_CHECKPOINT_COMMIT = 100
CHECKPOINT_COLUMNS = ("shard", "tag", "record")
#: How far before its own listing a checkpoint's readers look at the log: runs on other machines stamp their entries
#: with their own clocks.
CLOCK_SKEW_S = 30
#: A logged commit whose record is still missing after this long was stopped before its record: no longer awaited.
COMMIT_WINDOW_S = 600
_STAMP = "%Y%m%dT%H%M%S"
_LOG_FROM, _LOG_SEEN = b"emonet_batch.log_from", b"emonet_batch.log_seen"


def checkpoint_interval(records: int) -> int:
    """Commits between two checkpoints of an output that holds `records` committed shards."""
    return max(CHECKPOINT_EVERY, records // RECORDS_PER_CHECKPOINT_COMMIT)


def stamp(when: float) -> str:
    """A time as the log names it (sorts as text)."""
    return time.strftime(_STAMP, time.gmtime(when)) + f".{int(when % 1 * 1e6):06d}"


def log_change(fs, output: str, shard_id: str) -> None:
    """Note in the log that `shard_id`'s record is about to be created, or has been removed."""
    now = stamp(time.time())
    write_bytes(fs, join(output, COMMIT_LOG, now[:11], f"{now}-{secrets.token_hex(4)}-{shard_id}"), b"")


def log_entries(fs, output: str, since: str) -> dict[str, str]:
    """Entry name -> shard id, of the entries stamped at or after `since`: the hour folders from its hour on."""
    entries = {}
    for hour in sorted(h for h in subfolders(fs, join(output, COMMIT_LOG)) if h >= since[:11]):
        for path in listing(fs, join(output, COMMIT_LOG, hour)):
            name = path.rsplit("/", 1)[-1]
            if name >= since:
                entries[name] = name.split("-", 2)[2]
    return entries


@dataclass
class Checkpoint:
    records: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # shard -> (tag, record)
    log_from: str = ""
    log_seen: set[str] = field(default_factory=set)


@dataclass
class Records:
    """What a reader found: shard id -> record, the ids whose record file cannot be read, the ids read from their
    files (the rest came from the checkpoint), and warnings."""

    records: dict[str, dict[str, Any]]
    unreadable: list[str]
    fresh: set[str]
    warnings: list[str]
    tags: dict[str, str] = field(default_factory=dict)


def read_records(fs, output: str, full: bool = False) -> Records:
    """The output's commit records: through the newest checkpoint and the log after it, or (full, and where no
    checkpoint reads) through the listing of `_commits/`."""
    checkpoint, warnings = newest_checkpoint(fs, output)
    if full or checkpoint is None:
        found = _read_listed(fs, output, checkpoint or Checkpoint())
    else:
        found = _read_logged(fs, output, checkpoint, log_entries(fs, output, checkpoint.log_from))
    found.warnings[:0] = warnings
    return found


def _read_listed(fs, output: str, checkpoint: Checkpoint) -> Records:
    tags = {
        shard_id_of(path): (path, version_tag(info))
        for path, info in listing(fs, join(output, COMMITS)).items()
        if path.endswith(".json")
    }
    known = checkpoint.records
    records = {shard: known[shard][1] for shard, (_, tag) in tags.items() if shard in known and known[shard][0] == tag}
    read, unreadable = read_json_paths(fs, [path for shard, (path, _) in tags.items() if shard not in records])
    records.update(read)
    return Records(records, unreadable, set(read), [], {shard: tag for shard, (_, tag) in tags.items()})


def _read_logged(fs, output: str, checkpoint: Checkpoint, entries: dict[str, str]) -> Records:
    """Records through `checkpoint`, read again for the shards the log `entries` it has not taken in name."""
    changed = sorted(
        {shard for name, shard in entries.items() if name >= checkpoint.log_from and name not in checkpoint.log_seen}
    )
    read, unreadable = read_json_paths(fs, [join(output, commit_file(s)) for s in changed], missing_ok=True)
    kept = {shard: known for shard, known in checkpoint.records.items() if shard not in set(changed)}
    records = {shard: record for shard, (_, record) in kept.items()} | read
    return Records(records, unreadable, set(read), [], {shard: tag for shard, (tag, _) in kept.items()})


def newest_checkpoint(fs, output: str) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint that reads (None when none does), and warnings."""
    warnings = []
    for path in checkpoint_paths(fs, output):
        try:
            with fs.open(path, "rb") as file:
                table = pq.read_table(file, columns=list(CHECKPOINT_COLUMNS))
            metadata = table.schema.metadata or {}
            records = {
                shard: (tag, json.loads(record))
                for shard, tag, record in zip(*(table.column(c).to_pylist() for c in CHECKPOINT_COLUMNS))
            }
            seen = set(json.loads(metadata.get(_LOG_SEEN, b"[]")))
            return Checkpoint(records, metadata.get(_LOG_FROM, b"").decode(), seen), warnings
        except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
            warnings.append(f"commit checkpoint {path.rsplit('/', 1)[-1]} cannot be read ({first_line(exc)}); ignored")
    return None, warnings


def write_checkpoint(fs, output: str) -> str:
    """A checkpoint of every record now committed (read through the newest checkpoint and the log, or the listing
    where none reads), under a name of its own; the older ones beyond CHECKPOINTS_KEPT are removed. Its path."""
    started = time.time()
    checkpoint, _ = newest_checkpoint(fs, output)
    log_from = stamp(started - CLOCK_SKEW_S)
    # the log is listed before the records are read: an entry listed is resolved against a record read after it
    entries = log_entries(fs, output, min(log_from, checkpoint.log_from) if checkpoint else log_from)
    if checkpoint is None:
        found = _read_listed(fs, output, Checkpoint())
    else:
        found = _read_logged(fs, output, checkpoint, entries)
    # a logged commit whose record is not there yet (under way, or removed): readers look again while it is young
    awaited = stamp(started - COMMIT_WINDOW_S)
    pending = {name for name, shard in entries.items() if shard not in found.records and name >= awaited}
    log_from = min([log_from, *pending])
    seen = sorted(name for name in entries if name >= log_from and name not in pending)
    shards = sorted(found.records)
    table = pa.table(
        {
            "shard": pa.array(shards, pa.string()),
            "tag": pa.array([found.tags.get(s, "") for s in shards], pa.string()),
            "record": pa.array([json.dumps(found.records[s]) for s in shards], pa.string()),
        }
    ).replace_schema_metadata({_LOG_FROM: log_from.encode(), _LOG_SEEN: json.dumps(seen).encode()})
    name = f"{stamp(started)}-{secrets.token_hex(4)}.parquet"  # newest by name: the one that began last
    path = join(output, CHECKPOINTS, name)
    write_bytes(fs, path, parquet_bytes(table))
    for old in checkpoint_paths(fs, output)[CHECKPOINTS_KEPT + 1 :]:
        try:
            fs.rm(old)
        except FileNotFoundError:  # another run writing a checkpoint removed it first
            pass
    return path


def checkpoint_paths(fs, output: str) -> list[str]:
    """The checkpoints, newest first (not another writer's temporary file)."""
    names = [p for p in listing(fs, join(output, CHECKPOINTS)) if p.endswith(".parquet")]
    return sorted((p for p in names if not p.rsplit("/", 1)[-1].startswith(".")), reverse=True)

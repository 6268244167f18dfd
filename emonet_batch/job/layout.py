"""The output layout, a contract that users and every command read, defined once:

    <output>/labels/<shard-id>.parquet    one file per committed input shard
    <output>/errors/<shard-id>.parquet    its per-sample failures (only when there are any)
    <output>/_commits/<shard-id>.json     written last, create-only: the shard is done when it exists
    <output>/_commits_checkpoints/        tables of the records a run saw: a resume reads only newer ones
    <output>/_commit_log/<hour>/          an entry per record created or removed, named by time and shard
    <output>/manifest.json                the last run's summary
    <output>/manifest.shards.parquet      the last run's outcome of every input shard
    <output>/manifest.runs.parquet        every run's figures, oldest first
    <output>/_label_options.json          what shapes every label file here (model, heads, options)
    <output>/stats/                       stats.json, Parquet tables, report.html, evaluate-<format>.json
    <output>/_staging/<attempt>/          a commit's files before its record exists (then moved into place)
    <output>/_staging/<attempt>/_pieces/  the rows of each block, written by the inference workers until their
                                          shard is whole and assembled (job/pieces.py)
    <output>/_incomplete/labels|errors/   the rows of a shard read only in part (a truncated tar): kept for
                                          inspection, never committed, never under labels/

and the columns of a label file: the fixed ones, one float32 column per head, the optional derived groups
and the promoted metadata fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

LABELS, ERRORS, COMMITS, STATS = "labels", "errors", "_commits", "stats"
#: Tables of the commit records a run saw, so that a resume reads only the records written since (job/commitlog.py).
CHECKPOINTS = "_commits_checkpoints"
#: Time-ordered entries naming the shards whose records changed, so that a reader of a checkpoint finds the records
#: written after it without listing `_commits/` (job/commitlog.py).
COMMIT_LOG = "_commit_log"
STAGING, INCOMPLETE, PIECES = "_staging", "_incomplete", "_pieces"
MANIFEST, LABEL_OPTIONS = "manifest.json", "_label_options.json"
#: Beside the manifest: the last run's outcome of every shard, and every run's figures (tables, so that neither
#: grows the manifest with the corpus).
MANIFEST_SHARDS, MANIFEST_RUNS = "manifest.shards.parquet", "manifest.runs.parquet"
STATS_JSON, REPORT_HTML = "stats.json", "report.html"
#: What a run writes, so what --overwrite removes (and nothing else).
RUN_OUTPUTS = (
    LABELS,
    ERRORS,
    COMMITS,
    CHECKPOINTS,
    COMMIT_LOG,
    STATS,
    STAGING,
    INCOMPLETE,
    MANIFEST,
    MANIFEST_SHARDS,
    MANIFEST_RUNS,
    LABEL_OPTIONS,
)

#: Columns every label file has besides the heads: the sample key and shard id first, the best emotion last.
KEY, SHARD, TOP_EMOTION, TOP_PROB = "key", "shard", "top_emotion", "top_prob"
FIXED_LABEL_COLUMNS = (KEY, SHARD, TOP_EMOTION, TOP_PROB)
EMBEDDING_COLUMN = "embedding"
CENTERED_SUFFIX, SOFTMAX_SUFFIX = "_centered", "_softmax"
#: The Parquet key-value metadata of label and error files that names the model which produced them.
MODEL_ID_METADATA = "emonet_batch.model_id"
#: ... and the tower whose embeddings it holds (record.tower_id): what heads-only models are checked against.
TOWER_ID_METADATA = "emonet_batch.tower_id"
#: Columns of an error file.
ERROR_COLUMNS = (KEY, SHARD, "stage", "error_type", "message")


def label_file(shard_id: str) -> str:
    return f"{LABELS}/{shard_id}.parquet"


def error_file(shard_id: str) -> str:
    return f"{ERRORS}/{shard_id}.parquet"


def commit_file(shard_id: str) -> str:
    return f"{COMMITS}/{shard_id}.json"


def staged_file(attempt: str, name: str) -> str:
    """Where an attempt writes `name` (a label or error file) before its commit record exists."""
    return f"{STAGING}/{attempt}/{name}"


def piece_file(attempt: str, shard_id: str, name: str) -> str:
    """Where an attempt's inference worker writes the rows of one shard from one block (`name` is its own)."""
    return f"{STAGING}/{attempt}/{PIECES}/{shard_id}/{name}"


def incomplete_file(name: str) -> str:
    return f"{INCOMPLETE}/{name}"


def stats_file(name: str) -> str:
    return f"{STATS}/{name}"


def shard_id_of(path: str) -> str:
    """The shard id a label, error or commit file is named after."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0]


def centered_column(head: str) -> str:
    return f"{head}{CENTERED_SUFFIX}"


def softmax_column(head: str) -> str:
    return f"{head}{SOFTMAX_SUFFIX}"


def reserved_columns(heads: Sequence[str], centered: bool, softmax: bool) -> set[str]:
    """Names a metadata field may not take: every label column of these options, and the embedding's."""
    names = {*FIXED_LABEL_COLUMNS, EMBEDDING_COLUMN, *heads}
    if centered:
        names |= {centered_column(h) for h in heads}
    if softmax:
        names |= {softmax_column(h) for h in heads}
    return names


def metadata_columns(names: Iterable[str], heads: Iterable[str]) -> list[str]:
    """The promoted metadata fields among a label file's columns, in file order."""
    own = {*FIXED_LABEL_COLUMNS, EMBEDDING_COLUMN, *heads}
    return [n for n in names if n not in own and not n.endswith((CENTERED_SUFFIX, SOFTMAX_SUFFIX))]

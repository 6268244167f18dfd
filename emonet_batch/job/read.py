"""Read stage: shard -> rows of raw sample bytes (no decoding here), ending with one `end` row.

Why our own datasource instead of `ray.data.read_webdataset`: that reader builds a DataFrame per
sample, assumes a sample's members are contiguous, decodes images with PIL inside the read, and one bad
member fails its whole block. Here the read only moves bytes, every odd member becomes an error row, and
the final `end` row tells the committer how many samples the shard held and whether it was read to the
end, which is what lets a shard be committed exactly once with nothing lost.

The rows are those of the row protocol (rows.py); the Ray datasource over this stage is in the edge.
"""

from __future__ import annotations

import json
import logging
import tarfile
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import pyarrow as pa

from ..errors import first_line
from .config import StorageOptions
from .inputs import Shard
from .rows import (
    COMPLETE,
    END,
    FAILED,
    INCOMPLETE,
    READ_CPU,
    READ_SCHEMA,
    cpu_share,
    end_row,
    error_row,
    sample_row,
)
from .storage import Deadline, filesystem, join, split_query

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
#: The members whose bytes a sample uses; the others (captions, videos, arrays) are named, never held in memory.
USED_EXTENSIONS = (*IMAGE_EXTENSIONS, "json")


# --- tar shards (WebDataset convention) --------------------------------------------------------


def split_member_name(name: str) -> tuple[str, str]:
    """WebDataset key and extension: the key runs up to the first dot of the file's base name."""
    directory, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), extension.lower()


def tar_members(stream: BinaryIO, size: int | None = None) -> Iterator[tuple[str, dict[str, bytes], list[str]]]:
    """(key, {extension: bytes}, [why a member holds no file]) per run of contiguous members sharing a key,
    streaming. Folders are no members; a link or special file is named in the list (a streamed tar cannot go back
    to a link's target, and webdataset's readers skip links without a word).

    tarfile's stream mode ends quietly where a truncated file ends, so truncation is checked here:
    every member must be as long as its header says, and an uncompressed archive of `size` bytes must
    still hold the two zero blocks that end a tar after its last member."""
    with tarfile.open(fileobj=stream, mode="r|*") as archive:
        key, members, not_files = None, {}, []
        for member in archive:
            if member.isdir():
                continue
            member_key, extension = split_member_name(member.name)
            if member_key != key:
                if key is not None:
                    yield key, members, not_files
                key, members, not_files = member_key, {}, []
            if not member.isfile():
                not_files.append(not_a_file(member))
                continue
            if extension.rpartition(".")[2] not in USED_EXTENSIONS:
                members[extension] = b""  # the stream still passes over its bytes, so truncation is still noticed
                continue
            data = archive.extractfile(member).read()
            if len(data) != member.size:
                raise tarfile.ReadError(f"member {member.name} ends after {len(data)} of {member.size} bytes")
            members[extension] = data
        if size is not None and archive.offset + 2 * tarfile.BLOCKSIZE > size:
            raise tarfile.ReadError("the end-of-archive marker is missing")
        if key is not None:
            yield key, members, not_files


def not_a_file(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"{member.name} is a symbolic link to {member.linkname}"
    if member.islnk():
        return f"{member.name} is a hard link to {member.linkname}"
    return f"{member.name} is a special file"


class EndsEarly(Exception):
    """A tar shard that ends before its end-of-archive marker, after `samples` whole samples."""

    def __init__(self, samples: int, detail: str):
        super().__init__(detail)
        self.samples, self.detail = samples, detail

    def end_row(self, shard: str) -> dict[str, Any]:
        # the same bytes end in the same place on every read: a rerun cannot complete it
        reason = f"shard is truncated or unreadable after {self.samples} samples: {self.detail}"
        return end_row(shard, self.samples, INCOMPLETE if self.samples else FAILED, reason, retryable=False)


def tar_samples(stream: BinaryIO, shard: str, size: int | None = None) -> Iterator[dict[str, Any]]:
    """A tar shard's sample and error rows; returns how many, or raises EndsEarly after the last whole sample. An
    OSError of the stream itself (a storage fault, not the file's content) is raised, for shard_rows to retry."""
    seen: set[str] = set()
    seq = 0
    try:
        for key, members, not_files in tar_members(stream, size):
            yield sample_from_members(shard, seq, key, members, seen, not_files)
            seen.add(key)
            seq += 1
    except (tarfile.TarError, EOFError) as exc:
        raise EndsEarly(seq, f"{type(exc).__name__}: {exc}") from None
    return seq


def tar_rows(stream: BinaryIO, shard: str, size: int | None = None) -> Iterator[dict[str, Any]]:
    """A tar shard's rows; a shard that ends early gives an incomplete (or failed) `end` row."""
    try:
        count = yield from tar_samples(stream, shard, size)
    except EndsEarly as early:
        yield early.end_row(shard)
        return
    yield end_row(shard, count, COMPLETE)


def sample_from_members(
    shard: str, seq: int, key: str, members: dict[str, bytes], seen: set[str], not_files: list[str]
) -> dict[str, Any]:
    if key in seen:
        return error_row(
            shard, seq, key, "read", "duplicate_key", f"members of {key!r} are not contiguous in the shard"
        )
    if not_files:
        return error_row(shard, seq, key, "read", "not_a_file", f"{'; '.join(not_files)}: {PACK_FILES}")
    image_fields = member_fields(members, IMAGE_EXTENSIONS)
    if len(image_fields) != 1:
        return error_row(shard, seq, key, "read", *image_problem(image_fields, members))
    json_fields = member_fields(members, ("json",))
    if len(json_fields) > 1:
        return error_row(
            shard, seq, key, "read", "bad_metadata", f"several json members ({', '.join(json_fields)}): {DOTTED_KEYS}"
        )
    meta = members[json_fields[0]] if json_fields else None
    if meta is not None:
        try:
            meta_text = json.dumps(json.loads(meta), sort_keys=True)
        except (ValueError, UnicodeDecodeError) as exc:
            return error_row(shard, seq, key, "read", "bad_metadata", f"json member is not valid JSON: {exc}")
    else:
        meta_text = None
    return sample_row(shard, seq, key, members[image_fields[0]], meta_text)


#: What to do about a link in a tar: store the files it points to.
PACK_FILES = "a tar's links are not followed: pack the files themselves (tar --dereference --hard-dereference)"

#: Why a sample can hold several images or json members: the WebDataset key ends at the first dot of the
#: file name, so `img.001.jpg` and `img.002.jpg` are the fields `001.jpg` and `002.jpg` of one sample `img`.
DOTTED_KEYS = "keys with dots merge samples (a key ends at the first dot of a file name): write keys without dots"


def member_fields(members: dict[str, bytes], extensions: tuple[str, ...]) -> list[str]:
    """The members that hold one of `extensions`: the first exact extension present (jpg before png...), else
    every field whose last suffix is one (`v2.jpg` of a key written with a dot, as WebDataset's decoders
    read it)."""
    exact = next((ext for ext in extensions if ext in members), None)
    if exact is not None:
        return [exact]
    return sorted(field for field in members if field.rpartition(".")[2] in extensions)


def image_problem(fields: list[str], members: dict[str, bytes]) -> tuple[str, str]:
    if fields:
        return "duplicate_key", f"several image members ({', '.join(fields)}): {DOTTED_KEYS}"
    return "missing_image", f"no jpg/jpeg/png/webp member (has: {', '.join(sorted(members)) or 'nothing'})"


# --- Parquet shards (Hugging Face `Image` columns) -------------------------------------------------


def image_column_of(schema: pa.Schema) -> str | None:
    """The Hugging Face Image column: a struct with `bytes`; `image` is preferred when several; None when none."""
    candidates = [f.name for f in schema if pa.types.is_struct(f.type) and f.type.get_field_index("bytes") >= 0]
    if not candidates:
        return None
    return "image" if "image" in candidates else candidates[0]


def parquet_rows(
    stream: BinaryIO,
    shard: str,
    key_column: str | None = None,
    beside: Callable[[str], bytes] | None = None,
    meta_fields: tuple[str, ...] = (),
) -> Iterator[dict[str, Any]]:
    """A Parquet shard's rows. The key comes from `key_column` (else `__key__` or `key`, else the image path's
    stem, else the row number); an image stored as a path only is read with `beside(path)` (relative to the
    shard's folder) when given. The metadata is every scalar column, and the list, struct and map columns named
    in `meta_fields` (each row's whole metadata travels with it: a wide nested column nobody asked for would too)."""
    import pyarrow.parquet as pq

    seq = 0
    try:
        parquet = pq.ParquetFile(stream)
        column = image_column_of(parquet.schema_arrow)
        if column is None:
            raise NotAShard("no image column (a struct with a `bytes` field, as Hugging Face `Image` writes)")
        names = parquet.schema_arrow.names
        if key_column and key_column not in names:
            raise NotAShard(f"no key column {key_column!r} (columns: {', '.join(names)})")
        key_column = key_column or next((c for c in ("__key__", "key") if c in names), None)
        meta_columns = [
            f.name
            for f in parquet.schema_arrow
            if f.name not in (column, key_column)
            and (_is_scalar(f.type) or (pa.types.is_nested(f.type) and f.name in meta_fields))
        ]
        # only the columns a row uses are read: a second image column or a blob nobody asked for is never fetched
        used = [column, *([key_column] if key_column else []), *meta_columns]
        for batch in parquet.iter_batches(batch_size=256, columns=used):
            for record in batch.to_pylist():
                image = record[column] or {}
                key = _parquet_key(record, key_column, image.get("path"), seq)
                meta = (
                    json.dumps({c: record[c] for c in meta_columns}, sort_keys=True, default=str)
                    if meta_columns
                    else None
                )
                data, problem = image_bytes(image, beside)
                if data is None:
                    yield error_row(shard, seq, key, "read", "missing_image", f"row {seq} {problem}")
                else:
                    yield sample_row(shard, seq, key, data, meta)
                seq += 1
    except OSError:
        raise  # a storage fault (pyarrow's IO errors are OSErrors too): shard_rows retries
    except NotAShard as exc:  # preflight refuses these; a file replaced since is caught here
        yield end_row(shard, 0, FAILED, f"not a shard of images this run can read: {exc}", retryable=False)
        return
    except (ValueError, pa.ArrowException) as exc:
        reason = f"shard is truncated or unreadable after {seq} samples: {type(exc).__name__}: {exc}"
        yield end_row(shard, seq, INCOMPLETE if seq else FAILED, reason, retryable=False)
        return
    yield end_row(shard, seq, COMPLETE)


class NotAShard(ValueError):
    """A Parquet file without an image column, or without the --key-column: another kind of file."""


def _is_scalar(kind: pa.DataType) -> bool:
    return not (pa.types.is_nested(kind) or is_bytes(kind))


def is_bytes(kind: pa.DataType) -> bool:
    """A column of raw bytes, which no label column carries (labels hold text, numbers, and JSON for the rest)."""
    checks = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_fixed_size_binary, pa.types.is_binary_view)
    return any(check(kind) for check in checks)


def image_bytes(image: dict[str, Any], beside: Callable[[str], bytes] | None) -> tuple[bytes | None, str]:
    """A Hugging Face Image value's bytes: stored, or read from its path beside the shard; else why not."""
    if image.get("bytes") is not None:
        return image["bytes"], ""
    path = image.get("path")
    if not path:
        return None, "has no image bytes and no path"
    if beside is None:
        return None, f"has no image bytes, only the path {path}"
    try:
        return beside(path), ""
    except (FileNotFoundError, IsADirectoryError):
        return None, (
            f"has no image bytes and {path} is not beside the shard: put the images there, or store their bytes "
            "in the Parquet file (datasets: embed_table_storage / push_to_hub embeds them)"
        )


def _parquet_key(record: dict, key_column: str | None, path: str | None, seq: int) -> str:
    if key_column and record.get(key_column) is not None:
        return str(record[key_column])
    if path:
        return split_member_name(path)[0].rsplit("/", 1)[-1]
    return f"{seq:06d}"


# --- the shard as a whole ------------------------------------------------------------------------


#: Reads of one shard before a storage fault makes it incomplete, and the pause before the first retry
#: (doubled each time). The object-store clients retry each request on their own first (config.py).
READ_ATTEMPTS, READ_RETRY_DELAY_S = 3, 1.0
#: What one storage call of a read may fetch: each call must answer within --io-timeout, so this sets the slowest
#: transfer that is not a stall (16 MiB in 60 s: 0.27 MB/s). s3fs would fetch 50 MiB blocks.
READ_BLOCK_BYTES = 16 << 20
#: The label and key of the error row that an accepted truncated shard ends with.
TRUNCATED, TRUNCATED_KEY = "truncated", "(end of archive)"
log = logging.getLogger(__name__)


def shard_rows(
    shard: Shard, storage: StorageOptions, key_column: str | None = None, accept_truncated: bool = False,
    meta_fields: tuple[str, ...] = (),
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Every row of one shard, `end` last; never an exception. A storage fault or stall while reading starts the
    read over (up to READ_ATTEMPTS times), skipping the rows already given, so each row is given once. A tar that
    ends early is incomplete, or with `accept_truncated` complete with its readable samples (accepted_end)."""
    given, faults = 0, []
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            for index, row in enumerate(_read_once(shard, storage, key_column, meta_fields)):
                if index >= given:
                    given += 1
                    if row["kind"] == END and faults and row["status"] == COMPLETE:
                        row["reason"] = f"read {attempt} times after storage faults ({faults[-1]})"
                    yield row
            return
        except EndsEarly as early:
            yield from accepted_end(shard, storage, early) if accept_truncated else [early.end_row(shard.shard_id)]
            return
        except _CannotOpen as exc:
            yield end_row(
                shard.shard_id, given, INCOMPLETE if given else FAILED, f"cannot open shard: {exc}", retryable=False
            )
            return
        except OSError as exc:
            problem = f"{type(exc).__name__}: {first_line(exc)}"
            if attempt == READ_ATTEMPTS:
                reason = f"reading failed {READ_ATTEMPTS} times, the last after {given} samples: {problem}"
                yield end_row(shard.shard_id, given, INCOMPLETE if given else FAILED, reason)
                return
            log.warning("shard %s: read %d failed (%s); reading it again", shard.shard_id, attempt, problem)
            faults.append(problem)
            time.sleep(READ_RETRY_DELAY_S * 2 ** (attempt - 1))


def accepted_end(shard: Shard, storage: StorageOptions, early: EndsEarly) -> Iterator[dict[str, Any]]:
    """--accept-truncated: a tar read again that ends after the same samples, in the same place, is complete with
    one `truncated` error row where it ends. One that ends elsewhere (a file still being written) or cannot be
    read again stays incomplete, as does one with no whole sample."""
    if not early.samples:
        yield early.end_row(shard.shard_id)
        return
    try:
        again = _ends_early(shard, storage)
        agree = again is not None and (again.samples, again.detail) == (early.samples, early.detail)
        second = "read to its end" if again is None else f"{again.samples} samples ({again.detail})"
    except OSError as exc:
        agree, second = False, f"a storage fault ({type(exc).__name__}: {first_line(exc)})"
    if not agree:
        reason = (
            f"ends early after {early.samples} samples ({early.detail}), but a second read gave {second}: not "
            "accepted (a file still being written?)"
        )
        yield end_row(shard.shard_id, early.samples, INCOMPLETE, reason)
        return
    where = f"the tar ends early, after {early.samples} samples: {early.detail}"
    yield error_row(shard.shard_id, early.samples, TRUNCATED_KEY, "read", TRUNCATED, f"{where} (two reads agree)")
    yield end_row(shard.shard_id, early.samples + 1, COMPLETE, f"accepted truncated (--accept-truncated): {where}")


def _ends_early(shard: Shard, storage: StorageOptions) -> EndsEarly | None:
    """Read a shard through, keeping nothing: where it ends early, or None when it does not."""
    try:
        for _ in _read_once(shard, storage, None, ()):
            pass
    except EndsEarly as early:
        return early
    return None


class _CannotOpen(Exception):
    """Opening a shard failed for good (missing, forbidden, no credentials): no retry."""


def _read_once(
    shard: Shard, storage: StorageOptions, key_column: str | None, meta_fields: tuple[str, ...]
) -> Iterator[dict[str, Any]]:
    deadline = Deadline(shard.shard_id, storage.io_timeout)
    try:
        fs, path = filesystem(shard.url, storage)
        stream = deadline.call(fs.open, path, "rb", block_size=READ_BLOCK_BYTES)
        # the size of a plain tar lets the reader notice a file cut at a member boundary
        size = deadline.call(fs.size, path) if split_query(shard.url)[0].lower().endswith(".tar") else None
    except (FileNotFoundError, PermissionError) as exc:
        raise _CannotOpen(f"{type(exc).__name__}: {first_line(exc)}") from None
    except OSError:
        raise  # a storage fault or stall: retried
    except Exception as exc:  # any other backend error at open (credentials, bad URL) will not go away
        raise _CannotOpen(f"{type(exc).__name__}: {first_line(exc)}") from None
    with deadline.reader(stream) as reader:
        if shard.format == "parquet":
            folder = path.rsplit("/", 1)[0] if "/" in path else ""
            beside = lambda relative: deadline.call(fs.cat_file, join(folder, relative) if folder else relative)  # noqa: E731
            yield from parquet_rows(reader, shard.shard_id, key_column, beside, meta_fields)
        else:
            count = yield from tar_samples(reader, shard.shard_id, size)
            yield end_row(shard.shard_id, count, COMPLETE)


def row_blocks(
    shard: Shard, storage: StorageOptions, rows_per_block: int, key_column: str | None = None,
    accept_truncated: bool = False, meta_fields: tuple[str, ...] = (),
) -> Iterator[pa.Table]:  # fmt: skip
    """The rows of a shard as Arrow blocks of at most `rows_per_block` rows, with the CPU time each took."""
    block: list[dict[str, Any]] = []
    started = time.thread_time()
    for row in shard_rows(shard, storage, key_column, accept_truncated, meta_fields):
        block.append(row)
        if len(block) >= rows_per_block:
            yield _block(block, started)
            block, started = [], time.thread_time()
    if block:
        yield _block(block, started)


def _block(rows: list[dict[str, Any]], started: float) -> pa.Table:
    table = pa.Table.from_pylist(rows, schema=READ_SCHEMA)
    seconds = cpu_share(time.thread_time() - started, len(rows))
    return table.set_column(table.schema.get_field_index(READ_CPU), READ_CPU, pa.array(seconds))

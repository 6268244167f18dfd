"""Object storage through fsspec: local paths, s3://, gs:// and any fsspec URL.

Credentials are never passed here: s3fs/gcsfs read them from the environment of the process that
touches storage. URLs are shown to people only through `redact_url`, which drops any user:password@ and
hides query values (presigned URLs carry their signature there).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from ..errors import EmonetError, UsageError, first_line
from .config import StorageOptions


class _RetryNotice(logging.Handler):
    """One line on stderr each time the S3 client retries a request."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Retry needed, retrying"):
            delay = f" in {record.args[0]:.2f} s" if record.args else ""
            print(
                f"emonet-batch: object storage refused or failed a request for now; retrying it{delay}",
                file=sys.stderr,
                flush=True,
            )


def report_storage_retries() -> None:
    """Say so when the S3 client retries: botocore (and aiobotocore, which s3fs uses) log each retry at
    debug level only, so their retry loggers get a handler of ours, once, in the process that calls this."""
    for name in ("botocore.retries.standard", "aiobotocore.retries.standard"):
        logger = logging.getLogger(name)
        if not any(isinstance(handler, _RetryNotice) for handler in logger.handlers):
            logger.addHandler(_RetryNotice(logging.DEBUG))
            logger.setLevel(logging.DEBUG)
            logger.propagate = False  # their other debug lines stay out of whatever the root logger prints


class StorageError(EmonetError):
    """Reading or writing the output failed (permissions, missing bucket, network)."""


class OutOfSpace(StorageError):
    """A write failed for want of space: a full disk, a quota, a file size limit. Nothing more can be written there
    until space is freed, so a run stops starting shards (run/score.py)."""


#: What reading a path that is not there raises: a local path under a file (`a-file/labels`) is not there either.
NOT_FOUND = (FileNotFoundError, NotADirectoryError)

#: The errors of a write that no retry fixes until space is freed.
OUT_OF_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


_USERINFO = re.compile(r"^([a-zA-Z][\w+.-]*://)[^/@]*@")
#: A URL's user:password@ and query (a presigned signature, a token) inside any text.
_URL_SECRETS = re.compile(r"([a-zA-Z][\w+.-]*://)[^/@\s]*@|\?[^\s\"']*")


def split_query(url: str) -> tuple[str, str]:
    """(the URL up to its query, the query and fragment after it). Only a URL with a scheme has a query: in a
    local path `?` is a glob character."""
    if "://" not in url:
        return url, ""
    base, mark, rest = url.partition("?")
    if not mark:
        base, mark, rest = url.partition("#")
    return base, mark + rest


def without_credentials(url: str) -> str:
    """The URL without user:password@."""
    return _USERINFO.sub(r"\1", url)


def redact_url(url: str) -> str:
    """The URL without the secrets it may carry: user:password@ is dropped (s3://KEY:SECRET@bucket/... ->
    s3://bucket/...) and every query value is hidden (a presigned URL's signature, a token), keys kept."""
    base, query = split_query(without_credentials(url))
    if not query:
        return base
    pairs = query[1:].split("#", 1)[0].split("&")
    return base + "?" + "&".join(f"{pair.split('=', 1)[0]}=REDACTED" if "=" in pair else "REDACTED" for pair in pairs)


def filesystem(url: str, storage: StorageOptions) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a URL or local path; a URL no backend can take is a usage error, and a
    backend that connects when made (ftp://) and cannot is a storage error."""
    protocol, _, rest = url.partition("://") if "://" in url else ("file", "", url)
    if "://" in url and not rest.split("/", 1)[0]:
        raise UsageError(f"{redact_url(url)} names no bucket or host after {protocol}://")
    try:
        return fsspec.core.url_to_fs(url, **storage.fsspec_options(protocol))
    except ImportError as exc:  # a protocol whose package is not installed (gs:// without gcsfs)
        raise UsageError(f"{redact_url(url)}: {first_line(exc)}") from None
    except ValueError as exc:  # fsspec's "Protocol not known", or a URL its backend refuses
        unknown = "Protocol not known" in str(exc)
        problem = f"no storage backend reads {protocol}:// URLs" if unknown else first_line(exc)
        raise UsageError(f"{redact_url(url)}: {problem}") from None
    except OSError as exc:
        raise StorageError(f"cannot reach {redact_url(url)}: {type(exc).__name__}: {first_line(exc)}") from None


def storage_faults() -> tuple[type[BaseException], ...]:
    """What a storage backend raises for a request that failed: OSError (s3fs, gcsfs and fsspec's HTTP mostly
    raise those) and botocore's own errors, which s3fs passes on for an endpoint it cannot reach."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return (OSError,)
    return (OSError, BotoCoreError, ClientError)


def fault_line(exc: BaseException) -> str:
    """A failed storage request in one line, without the secrets a URL in its message may carry."""
    text = _URL_SECRETS.sub(r"\1", first_line(exc))
    return f"a storage request failed: {type(exc).__name__}: {text}"


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def write_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write a whole file. Local files go through a temporary name and a rename, so a reader never
    sees half a file; object stores publish a PUT atomically anyway."""
    try:
        _write(fs, path, data)
    except OSError as exc:
        raise write_error(fs, path, exc) from None


def write_error(fs: fsspec.AbstractFileSystem, path: str, exc: OSError) -> StorageError:
    kind = OutOfSpace if exc.errno in OUT_OF_SPACE_ERRNOS else StorageError
    return kind(f"cannot write {fs.unstrip_protocol(path)}: {type(exc).__name__}: {first_line(exc)}")


def _write(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    if is_local(fs):
        temporary = _local_temporary(path, data)
        os.replace(temporary, path)
    else:
        fs.pipe_file(path, data)


def _local_temporary(path: str, data: bytes) -> str:
    """`data` written and synced under a hidden temporary name beside `path` (readers that list a folder,
    pyarrow and duckdb among them, skip names starting with a dot)."""
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:  # a full disk, say: no part of a file is left behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return temporary


def create_only(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Write a file only if it does not exist, all at once; False when it already did.

    Local: the bytes go to a temporary file first, which is then hard-linked to `path` (link never replaces
    a file), so no reader ever sees an empty or partial file. Object stores: a conditional PUT
    (If-None-Match: *), which S3 and compatible servers apply atomically. Two runs racing on one name
    cannot both create it."""
    if is_local(fs):
        try:
            temporary = _local_temporary(path, data)
        except OSError as exc:
            raise write_error(fs, path, exc) from None
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        except OSError as exc:
            raise write_error(fs, path, exc) from None
        finally:
            os.unlink(temporary)
        return True
    try:
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    except OSError as exc:  # some backends report the failed precondition as a generic error
        if "PreconditionFailed" in str(exc) or "412" in str(exc):
            return False
        raise write_error(fs, path, exc) from None
    return True


def move(fs: fsspec.AbstractFileSystem, source: str, target: str) -> None:
    """Move a file, replacing `target`: a rename on local disks (atomic), a copy then a delete on object
    stores (a reader sees the old or the new object, never half of one). The single-file calls: fsspec's `mv`
    first lists both sides to expand patterns and folders, five requests where three do."""
    try:
        if is_local(fs):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(source, target)
        else:
            fs.cp_file(source, target)
            fs.rm_file(source)
    except OSError as exc:
        raise write_error(fs, target, exc) from None


def remove_if_present(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Remove a file that may not exist, in one request (an existence check first would take two on S3: a HEAD,
    then a listing in case the name is a folder)."""
    try:
        fs.rm_file(path)
    except NOT_FOUND:
        pass
    except OSError as exc:
        raise write_error(fs, path, exc) from None


def listing(fs: fsspec.AbstractFileSystem, directory: str) -> dict[str, dict[str, Any]]:
    """Path -> the backend's details of every file directly in `directory` (empty when it does not exist)."""
    try:
        return {info["name"]: info for info in fs.ls(directory, detail=True) if info.get("type") != "directory"}
    except NOT_FOUND:
        return {}


def subfolders(fs: fsspec.AbstractFileSystem, directory: str) -> list[str]:
    """The names of the folders directly in `directory` (empty when it does not exist)."""
    try:
        return [
            info["name"].rstrip("/").rsplit("/", 1)[-1]
            for info in fs.ls(directory, detail=True)
            if info.get("type") == "directory"
        ]
    except NOT_FOUND:
        return []


def version_tag(info: dict[str, Any]) -> str:
    """What changes when a file is written again, from its listing alone: its size and its object store's ETag
    (S3, GCS) or its modification time (local files)."""
    tag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or info.get("updated")
    return f"{info.get('size')}:{tag}"


def json_object(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any]:
    """The JSON object a file of an output holds (its label options, manifest, stats); NOT_FOUND when there is
    none, ValueError when its bytes are no JSON object."""
    loaded = json.loads(fs.cat_file(path))
    if not isinstance(loaded, dict):
        raise ValueError("not a JSON object")
    return loaded


def parquet_bytes(table: pa.Table) -> bytes:
    """A table as the Parquet files of an output are written (zstd, row groups of 64k rows). Float columns
    (scores, embeddings) are not dictionary-encoded: their values rarely repeat, so a dictionary page would fill
    and Parquet fall back to plain after paying for it. Float vectors (the embedding) are not compressed either:
    zstd saved 7% of their bytes and made them 45% slower to write and 70% slower to read."""
    buffer = io.BytesIO()
    repeating = [field.name for field in table.schema if not _floats(field.type)]
    vectors = {field.name for field in table.schema if _is_list(field.type) and _floats(field.type)}
    compression = {name: "none" if name in vectors else "zstd" for name in table.column_names}
    pq.write_table(table, buffer, compression=compression, row_group_size=64 * 1024, use_dictionary=repeating)
    return buffer.getvalue()


def _floats(kind: pa.DataType) -> bool:
    while _is_list(kind):
        kind = kind.value_type
    return pa.types.is_floating(kind)


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind)


def read_json_paths(
    fs: fsspec.AbstractFileSystem, paths: list[str], missing_ok: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """(name without .json -> parsed content, the names whose file is not a JSON object), read many at a time. A
    file that cannot be parsed is reported, never raised; with `missing_ok` a file that does not exist is left out."""
    contents = fs.cat(paths, on_error="omit" if missing_ok else "raise") if paths else {}
    paths = [path for path in paths if path in contents]
    parsed, unreadable = {}, []
    for path in paths:
        name = path.rsplit("/", 1)[-1][: -len(".json")]
        try:
            value = json.loads(contents[path])
        except (ValueError, UnicodeDecodeError):
            value = None
        if isinstance(value, dict):
            parsed[name] = value
        else:
            unreadable.append(name)
    return parsed, sorted(unreadable)


class StorageStall(TimeoutError):
    """A storage call that did not answer within --io-timeout (an OSError: read faults are retried)."""


#: Shard id -> when (time.time()) a storage call of its read began that has waited over STALL_NOTICE_S (or half its
#: deadline), in this process: what a read task reports to the run's live line (edge/waits.py).
WAITING: dict[str, float] = {}
STALL_NOTICE_S = 5.0


class Deadline:
    """The storage calls of one shard's read, each given `seconds` to answer or StorageStall is raised.

    Why a thread per call rather than the clients' own timeouts alone: those bound each socket wait, so a server
    that trickles a byte every few seconds, or a client that retries its timeouts, can hold a call much longer;
    here the caller moves on (the stalled call's thread is abandoned, and ends when its client gives up)."""

    def __init__(self, shard_id: str, seconds: float):
        self.shard_id, self.seconds = shard_id, seconds

    def call(self, function: Callable, *args, **kwargs):
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                outcome["value"] = function(*args, **kwargs)
            except BaseException as exc:  # handed to the caller as it is
                outcome["error"] = exc
            finally:
                done.set()

        started = time.time()
        threading.Thread(target=run, daemon=True, name=f"storage-{self.shard_id}").start()
        if not done.wait(min(STALL_NOTICE_S, self.seconds / 2)):
            WAITING[self.shard_id] = started
            try:
                done.wait(self.seconds - (time.time() - started))
            finally:
                WAITING.pop(self.shard_id, None)
        if not done.is_set():
            raise StorageStall(f"stalled for {self.seconds:.0f} s (no answer from storage; --io-timeout)")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def reader(self, stream) -> io.BufferedReader:
        """`stream` read through this deadline, 1 MiB at a time or more (a call per small read would cost a thread
        each)."""
        return io.BufferedReader(_DeadlineRaw(stream, self), buffer_size=1 << 20)


class _DeadlineRaw(io.RawIOBase):
    def __init__(self, stream, deadline: Deadline):
        self.stream, self.deadline = stream, deadline

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.stream.seekable()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()

    def readinto(self, buffer) -> int:
        data = self.deadline.call(self.stream.read, len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.stream.close()
        super().close()

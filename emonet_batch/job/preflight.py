"""Checks before any work starts, each failing in one line: one ONNX Runtime installed, credentials for object
storage, a Ray cluster to attach to that answers, an output that can be written, and inputs that exist, can be read
and begin like the format their name says.

They run before Ray starts, so a run that cannot work stops in seconds and leaves nothing behind (no manifest,
no label options record). The inputs are probed in parallel with one small ranged read each."""

from __future__ import annotations

import os
import secrets
import socket
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UsageError, first_line
from .accelerator import installed_runtimes, runtime_problem
from .config import RAY_ADDRESS_FORMS, StorageOptions
from .inputs import Shard
from .read import image_column_of, is_bytes
from .storage import (
    NOT_FOUND,
    StorageError,
    filesystem,
    is_local,
    join,
    redact_url,
    storage_faults,
    write_bytes,
)

#: Bytes read from the start of a tar input, and from the end of a Parquet one, to recognise its format.
HEAD_BYTES = 512
FOOTER_BYTES = 64 << 10
PROBE_THREADS = 16
_S3 = ("s3://", "s3a://")
#: How long the RAY_ADDRESS check waits for its host: ray.init itself retries an address where nothing listens
#: for minutes, without a word.
RAY_ADDRESS_TIMEOUT_S = 5.0


def check_runtime(gpu: bool) -> None:
    """Exactly one ONNX Runtime distribution is installed (`gpu`: the fix names the GPU build)."""
    problem = runtime_problem(installed_runtimes(), gpu)
    if problem:
        raise UsageError(problem)


def check_credentials(urls: list[str]) -> None:
    """Object-store URLs need credentials in the environment: say so before anything lists or reads them."""
    s3 = [url for url in urls if url.lstrip("@").startswith(_S3)]
    if s3 and s3_credential_source() is None:
        raise UsageError(
            f"no credentials for {redact_url(s3[0].lstrip('@'))}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE), or run where an instance or pod role provides them"
        )


def s3_credential_source() -> str | None:
    """Where botocore finds S3 credentials ("env", "shared-credentials-file", "iam-role", ...), None when nowhere;
    never the credentials themselves."""
    try:
        import botocore.session
    except ImportError:  # s3fs brings it: without it no s3:// URL can be read, so none are there to use
        return None
    credentials = botocore.session.get_session().get_credentials()
    return credentials.method if credentials is not None else None


def check_ray_address(address: str | None) -> None:
    """A cluster to attach to (RAY_ADDRESS as `host:port` or `ray://host:port`) answers on its port, before anything
    is written. The names Ray resolves itself (`auto`, `local`) are Ray's to judge when it starts
    (edge.runtime.attach); anything else (a dashboard's http:// address) is refused here."""
    if not address or address in ("auto", "local"):
        return
    endpoint = ray_endpoint(address)
    if endpoint is None:
        raise UsageError(f"RAY_ADDRESS={address} is no Ray cluster address; {RAY_ADDRESS_FORMS}")
    try:
        socket.create_connection(endpoint, timeout=RAY_ADDRESS_TIMEOUT_S).close()
    except OSError as exc:
        host, port = endpoint
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise UsageError(
            f"RAY_ADDRESS: nothing answers at {shown} ({exc.strerror or exc}); start the cluster there, or unset "
            "RAY_ADDRESS to run on this machine"
        ) from None


def ray_endpoint(address: str) -> tuple[str, int] | None:
    """The host and port a RAY_ADDRESS names (`host:port`, `ray://host:port`); None for anything else."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not host or "/" in host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_output(fs, output: str, display: str) -> None:
    """The output can hold a run: no file in its place, its bucket exists, and a probe file can be written
    and removed under it. A local output that does not exist yet is probed in its nearest existing folder
    instead, so a run that then fails a check leaves no folder behind (and no other run starting on the same
    new output at that moment sees its folder vanish)."""
    probe_in = output
    if display.startswith(("http://", "https://")):
        raise UsageError(f"an HTTP URL is read-only and cannot be an output: {display} (give a path or a bucket URL)")
    if is_local(fs):
        if os.path.exists(output) and not os.path.isdir(output):
            raise UsageError(f"output is a file, not a directory: {display}")
        probe_in = nearest_existing(output)
        if not os.path.isdir(probe_in):
            raise UsageError(f"cannot write to the output {display}: {probe_in} is a file, not a folder")
    else:
        # info, not exists: exists says False for an endpoint it cannot reach too, after retrying two requests
        try:
            fs.info(output.split("/", 1)[0])
        except FileNotFoundError:
            raise UsageError(f"output bucket not found: {display}") from None
        except PermissionError:
            pass  # a bucket this identity may write under but not look at: the probe below decides
        except storage_faults() as exc:
            raise StorageError(f"cannot reach the output {display}: {type(exc).__name__}") from None
    probe = join(probe_in, f"._probe-{secrets.token_hex(6)}")
    try:
        write_bytes(fs, probe, b"")
        fs.rm(probe)
    except Exception as exc:  # any backend's refusal means the same here
        raise UsageError(f"cannot write to the output {display}: {first_line(exc)}") from None


def nearest_existing(path: str) -> str:
    """`path` itself when it exists, else its nearest ancestor that does."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_inputs(
    shards: list[Shard], storage: StorageOptions, key_column: str | None = None, meta_fields: tuple[str, ...] = ()
) -> list[Shard]:
    """The shards left out; the others are checked: every one exists, can be read and starts (a Parquet file: ends)
    like its format, and a Parquet file holds an image column (and `key_column`, and no `meta_fields` of bytes). A
    Parquet file without images that was found by listing a folder or glob is left out (the run warns,
    `left_out_warning`); any other problem is the error, with how many more there are."""
    if not shards:
        return []
    with ThreadPoolExecutor(min(PROBE_THREADS, len(shards))) as pool:
        problems = list(pool.map(lambda s: input_problem(s, storage, key_column, meta_fields), shards))
    leave = [isinstance(p, NoImages) and s.listed for s, p in zip(shards, problems)]
    left_out = [s for s, left in zip(shards, leave) if left]
    refused = [p for p, left in zip(problems, leave) if p and not left]
    if refused:
        more = f" (and {len(refused) - 1} more inputs)" if len(refused) > 1 else ""
        raise UsageError(refused[0] + more)
    return left_out


def check_key_column(shards: list[Shard], key_column: str | None) -> None:
    """A key column is read from Parquet shards only: given for inputs that hold none, it would go unused."""
    if key_column and shards and not any(shard.format == "parquet" for shard in shards):
        raise UsageError(
            f"--key-column {key_column!r} names a column of Parquet shards, but no input is one (a WebDataset tar's "
            "keys are its file names)"
        )


class NoImages(str):
    """The problem of a Parquet file that holds no image column: another kind of file, such as img2dataset's
    per-shard metadata beside its tars."""


def left_out_warning(left_out: list[Shard]) -> list[str]:
    """The one warning that names the listed Parquet files left out for holding no images."""
    if not left_out:
        return []
    names = ", ".join(s.display_url.rsplit("/", 1)[-1] for s in left_out[:3]) + (", ..." if len(left_out) > 3 else "")
    return [f"left out {len(left_out)} Parquet files without an image column (img2dataset's metadata files?): {names}"]


def input_problem(
    shard: Shard, storage: StorageOptions, key_column: str | None = None, meta_fields: tuple[str, ...] = ()
) -> str | None:
    try:
        fs, path = filesystem(shard.url, storage)
        if shard.format == "parquet":
            return parquet_problem(shard, parquet_schema(fs, path), key_column, meta_fields)
        head = fs.cat_file(path, start=0, end=HEAD_BYTES)
    except NOT_FOUND:
        return f"input not found: {shard.display_url}"
    except NotParquet:
        return f"not a Parquet file: {shard.display_url}"
    except Exception as exc:  # permissions, network, a directory in the way: the input cannot be read
        return f"cannot read input {shard.display_url}: {type(exc).__name__}: {first_line(exc)}"
    return None if looks_like_tar(head) else f"not a tar file: {shard.display_url}"


def looks_like_tar(head: bytes) -> bool:
    """Whether a file's first bytes fit a tar shard: gzip's magic, or a tar header's `ustar`."""
    if head[:2] == b"\x1f\x8b":  # .tar.gz / .tgz
        return True
    return head[257:262] == b"ustar"


class NotParquet(Exception):
    """A file without Parquet's footer."""


def parquet_schema(fs, path: str) -> pa.Schema:
    """A Parquet file's schema from its footer alone (one ranged read of its end, two when the footer is longer):
    no data is read. Why by hand: pyarrow's own reader asks the filesystem for the size first, one more request."""
    tail = fs.cat_file(path, start=-FOOTER_BYTES)
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        raise NotParquet(path)
    footer = int.from_bytes(tail[-8:-4], "little") + 8
    if footer > len(tail):
        tail = fs.cat_file(path, start=-footer)
    return pq.read_schema(pa.BufferReader(tail[-footer:]))


def parquet_problem(
    shard: Shard, schema: pa.Schema, key_column: str | None, meta_fields: tuple[str, ...] = ()
) -> str | None:
    if image_column_of(schema) is None:
        return NoImages(
            f"{shard.display_url} holds no image column (a struct with a `bytes` field, as Hugging Face `Image` "
            f"writes; its columns: {', '.join(schema.names)}): not an image shard"
        )
    if key_column and key_column not in schema.names:
        return f"{shard.display_url} has no key column {key_column!r} (columns: {', '.join(schema.names)})"
    raw = [name for name in meta_fields if name in schema.names and is_bytes(schema.field(name).type)]
    if raw:
        return (
            f"--meta-fields {', '.join(raw)}: a column of bytes in {shard.display_url}, which no label column "
            "carries (text, numbers, lists and structs are)"
        )
    return None

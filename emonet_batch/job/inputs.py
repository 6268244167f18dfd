"""Expand INPUT arguments into a list of shards: brace ranges, globs, directories, @list files.

A shard's id names its output files: the file's stem, then 8 hex digits of the sha256 of its normalised
location (the URL without credentials, query or fragment; a local path made absolute), e.g.
`shard-00000-3f9a1c2e`. It depends on that one input alone, so it is the same in every run and every
command (score, nightly) whatever other inputs they list, and two shards with one file name in different
folders or buckets get different ids. An output therefore moves with its inputs: scored again from the same
URLs it resumes; from moved inputs, every shard counts as new.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from braceexpand import UnbalancedBracesError, braceexpand

from ..errors import UsageError
from .config import StorageOptions
from .layout import RUN_OUTPUTS
from .storage import NOT_FOUND, filesystem, redact_url, split_query, without_credentials

#: Shard formats by file name ending.
FORMATS = {".tar": "tar", ".tar.gz": "tar", ".tgz": "tar", ".parquet": "parquet"}
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Shard:
    url: str  # as given (may carry a protocol and a query); never shown unredacted
    shard_id: str  # output file stem: see the module docstring
    format: str  # "tar" | "parquet"
    #: found by listing a folder or a glob, not named: a listed Parquet file that holds no images (img2dataset's
    #: metadata beside its tars) is left out with a warning, a named one refused (preflight.check_inputs)
    listed: bool = False

    @property
    def display_url(self) -> str:
        return redact_url(self.url)


def shard_format(url: str) -> str | None:
    name = split_query(url)[0].rsplit("/", 1)[-1].lower()
    for ending, fmt in FORMATS.items():
        if name.endswith(ending):
            return fmt
    return None


def shard_stem(url: str) -> str:
    name = split_query(url)[0].rsplit("/", 1)[-1]
    for ending in sorted(FORMATS, key=len, reverse=True):
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return name


def normalised_location(url: str) -> str:
    """Where a shard is, as its id is computed from: no credentials, query or fragment; local paths absolute."""
    base = without_credentials(split_query(url)[0])
    scheme, sep, path = base.partition("://")
    if not sep or scheme.lower() in ("file", "local"):
        return "file://" + os.path.abspath(os.path.expanduser(path if sep else base))
    return f"{scheme.lower()}://{path}"  # object keys are literal: `a//b` and `a/b` are two objects


def shard_id(url: str) -> str:
    digest = hashlib.sha256(normalised_location(url).encode()).hexdigest()[:8]
    return f"{shard_stem(url)}-{digest}"


def make_shard(url: str, listed: bool = False) -> Shard:
    return Shard(url, shard_id(url), shard_format(url) or "tar", listed)


def without(shards: list[Shard], left_out: list[Shard]) -> list[Shard]:
    """`shards` but those of `left_out`, in order (by id: a run lists up to millions)."""
    if not left_out:
        return shards
    ids = {shard.shard_id for shard in left_out}
    return [shard for shard in shards if shard.shard_id not in ids]


def expand_inputs(
    specs: tuple[str, ...] | list[str], storage: StorageOptions, output: str | None = None
) -> list[Shard]:
    """Every shard the INPUT arguments name, in the order given, each location once. What a folder or glob finds
    among the files a run writes into `output` (its label files, stats tables) is the run's own, never an input."""
    own = normalised_location(output).rstrip("/") + "/" if output else None
    shards: dict[str, Shard] = {}
    outputs_own = 0
    for spec in specs:
        for url, listed in _expand_one(spec, storage):
            if listed and own and _written_by_runs(url, own):
                outputs_own += 1
                continue
            shard = make_shard(url, listed)
            shards.setdefault(shard.shard_id, shard)
    if not shards:
        raise UsageError(
            f"no input shards but the output's own files ({outputs_own} under it)"
            if outputs_own
            else "no input shards given"
        )
    return list(shards.values())


def _written_by_runs(url: str, root: str) -> bool:
    """Whether `url` is among the files a run writes into the output at `root` (normalised, ending in /)."""
    location = normalised_location(url)
    return location.startswith(root) and location[len(root) :].split("/", 1)[0] in RUN_OUTPUTS


def _expand_one(spec: str, storage: StorageOptions, lists: tuple[str, ...] = ()) -> list[tuple[str, bool]]:
    """(URL, whether it was found by listing) of each shard a spec names; `lists`: the @lists being read."""
    if spec.startswith("@"):
        return _read_list(spec[1:], storage, lists)
    urls = []
    try:
        items = list(braceexpand(spec))
    except UnbalancedBracesError:
        raise UsageError(f"unbalanced braces in the input {redact_url(spec)}") from None
    for item in items:
        if _GLOB_CHARS & set(split_query(item)[0].split("://", 1)[-1]):
            urls.extend(_glob(item, storage))
        else:
            urls.extend(_file_or_directory(item, storage))
    return urls


def _read_list(list_url: str, storage: StorageOptions, lists: tuple[str, ...]) -> list[tuple[str, bool]]:
    """The inputs an @list names, one a line; a list may name other lists, but not itself through them."""
    location = normalised_location(list_url)
    if location in lists:
        raise UsageError(f"the input list {redact_url(list_url)} names itself (through @lines)")
    fs, path = filesystem(list_url, storage)
    try:
        text = fs.cat_file(path).decode("utf-8")
    except NOT_FOUND:
        raise UsageError(f"input list not found: {redact_url(list_url)}") from None
    except IsADirectoryError:
        raise UsageError(f"input list is a directory, not a file: {redact_url(list_url)}") from None
    except UnicodeDecodeError:
        raise UsageError(f"input list is not UTF-8 text: {redact_url(list_url)}") from None
    urls = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            urls.extend(_expand_one(line, storage, (*lists, location)))
    return urls


def _with_protocol(template: str, fs, path: str) -> str:
    """Give a listed path the protocol of the URL it came from (fsspec lists bare paths)."""
    if "://" not in template:
        return path
    return fs.unstrip_protocol(path)


def _glob(pattern: str, storage: StorageOptions) -> list[tuple[str, bool]]:
    fs, path = filesystem(pattern, storage)
    matches = sorted(p for p in fs.glob(path) if shard_format(p))
    if not matches:
        raise UsageError(f"no shards (.tar, .parquet) match {redact_url(pattern)}")
    return [(_with_protocol(pattern, fs, p), True) for p in matches]


def _file_or_directory(url: str, storage: StorageOptions) -> list[tuple[str, bool]]:
    fs, path = filesystem(url, storage)
    if shard_format(url):
        return [(url, False)]  # a missing shard is reported by the run as failed, not here
    if fs.isdir(path):
        found = sorted(p for p in fs.find(path) if shard_format(p))
        if not found:
            raise UsageError(f"no shards (.tar, .parquet) in {redact_url(url)}")
        return [(_with_protocol(url, fs, p), True) for p in found]
    if not fs.exists(path):
        raise UsageError(f"input not found: {redact_url(url)}")
    raise UsageError(f"not a shard (.tar, .tar.gz, .parquet): {redact_url(url)}")

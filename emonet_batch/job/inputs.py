"""Expand INPUT arguments into a list of shards: brace ranges, globs, directories, @list files."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from braceexpand import braceexpand

from ..errors import UsageError
from .config import StorageOptions
from .storage import filesystem, redact_url

#: Shard formats by file name ending.
FORMATS = {".tar": "tar", ".tar.gz": "tar", ".tgz": "tar", ".parquet": "parquet"}
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Shard:
    url: str  # as given (may carry a protocol); never logged unredacted
    shard_id: str  # output file stem, unique within a run
    format: str  # "tar" | "parquet"

    @property
    def display_url(self) -> str:
        return redact_url(self.url)


def shard_format(url: str) -> str | None:
    name = url.rsplit("/", 1)[-1].lower()
    for ending, fmt in FORMATS.items():
        if name.endswith(ending):
            return fmt
    return None


def shard_stem(url: str) -> str:
    name = url.rsplit("/", 1)[-1]
    for ending in sorted(FORMATS, key=len, reverse=True):
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return name


def expand_inputs(specs: tuple[str, ...] | list[str], storage: StorageOptions) -> list[Shard]:
    """Every shard the INPUT arguments name, in the order given, each once, with unique ids."""
    urls: list[str] = []
    for spec in specs:
        urls.extend(_expand_one(spec, storage))
    unique = list(dict.fromkeys(urls))
    if not unique:
        raise UsageError("no input shards given")
    return assign_ids(unique)


def assign_ids(urls: list[str]) -> list[Shard]:
    """Shard id = file name without its extension; names that collide get a short hash of the URL."""
    stems = [shard_stem(url) for url in urls]
    shards = []
    for url, stem in zip(urls, stems):
        if stems.count(stem) > 1:
            stem = f"{stem}-{hashlib.sha256(url.encode()).hexdigest()[:8]}"
        shards.append(Shard(url, stem, shard_format(url) or "tar"))
    return shards


def _expand_one(spec: str, storage: StorageOptions) -> list[str]:
    if spec.startswith("@"):
        return _read_list(spec[1:], storage)
    urls = []
    for item in braceexpand(spec):
        if _GLOB_CHARS & set(item.split("://", 1)[-1]):
            urls.extend(_glob(item, storage))
        else:
            urls.extend(_file_or_directory(item, storage))
    return urls


def _read_list(list_url: str, storage: StorageOptions) -> list[str]:
    fs, path = filesystem(list_url, storage)
    try:
        text = fs.cat_file(path).decode("utf-8")
    except FileNotFoundError:
        raise UsageError(f"input list not found: {redact_url(list_url)}") from None
    urls = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            urls.extend(_expand_one(line, storage))
    return urls


def _with_protocol(template: str, fs, path: str) -> str:
    """Give a listed path the protocol of the URL it came from (fsspec lists bare paths)."""
    if "://" not in template:
        return path
    return fs.unstrip_protocol(path)


def _glob(pattern: str, storage: StorageOptions) -> list[str]:
    fs, path = filesystem(pattern, storage)
    matches = sorted(p for p in fs.glob(path) if shard_format(p))
    if not matches:
        raise UsageError(f"no shards (.tar, .parquet) match {redact_url(pattern)}")
    return [_with_protocol(pattern, fs, p) for p in matches]


def _file_or_directory(url: str, storage: StorageOptions) -> list[str]:
    fs, path = filesystem(url, storage)
    if shard_format(url):
        return [url]  # a missing shard is reported by the run as failed, not here
    if fs.isdir(path):
        found = sorted(p for p in fs.find(path) if shard_format(p))
        if not found:
            raise UsageError(f"no shards (.tar, .parquet) in {redact_url(url)}")
        return [_with_protocol(url, fs, p) for p in found]
    if not fs.exists(path):
        raise UsageError(f"input not found: {redact_url(url)}")
    raise UsageError(f"not a shard (.tar, .tar.gz, .parquet): {redact_url(url)}")

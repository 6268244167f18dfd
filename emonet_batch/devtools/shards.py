"""Write WebDataset shards: an image folder (plus optional metadata) -> shard-00000.tar, ...

Members of a sample are written together (contiguous) under a unique key by webdataset's ShardWriter, with
fixed mtimes and owners so the same input gives byte-identical shards.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import UsageError

IMAGE_SUFFIXES = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


def write_shards(
    samples: Iterable[tuple[str, dict[str, bytes]]], out_dir: Path, samples_per_shard: int, prefix: str = "shard"
) -> list[Path]:
    """Write (key, {extension: bytes}) samples into tar shards of `samples_per_shard` samples; none for no samples.

    webdataset's ShardWriter writes them, as the format's own clients do: each sample's members together, in
    sorted order. A fixed mtime, owner and mode make the same samples give byte-identical shards."""
    if samples_per_shard < 1:
        raise UsageError("--shard-size must be at least 1")
    samples = iter(samples)
    first = next(samples, None)
    if first is None:
        return []  # ShardWriter opens its first shard at once: an empty tar for nothing
    from webdataset import ShardWriter  # imports torch when installed: only the commands that write shards pay

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    pattern = str(out_dir / prefix).replace("%", "%%") + "-%05d.tar"  # ShardWriter fills in the shard number
    with ShardWriter(
        pattern,
        maxcount=samples_per_shard,
        maxsize=float("inf"),  # shards split by sample count only, as --shard-size says
        post=lambda name: paths.append(Path(name)),
        verbose=0,
        encoder=False,  # members are bytes already
        mtime=0,
        user="",
        group="",
        mode=0o644,
    ) as writer:
        for key, members in itertools.chain([first], samples):
            writer.write({"__key__": key, **members})
    return paths


def sample_key(relative: Path, used: set[str]) -> str:
    """A WebDataset key from a relative path: no dots (the key ends at the first dot), unique."""
    base = re.sub(r"[^\w-]+", "_", str(relative.with_suffix("")).replace("/", "__")).strip("_") or "sample"
    key, n = base, 1
    while key in used:
        n += 1
        key = f"{base}_{n}"
    used.add(key)
    return key


def load_metadata(path: Path | None) -> dict[str, dict[str, Any]]:
    """File name or relative path -> metadata, from a CSV (column `file`, `image` or `path`) or a JSON
    object keyed by file name / list of objects with such a field."""
    if path is None:
        return {}
    if not path.is_file():
        raise UsageError(f"metadata file not found: {path}")
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            records = list(csv.DictReader(handle))
    else:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        records = [{"file": k, **v} for k, v in loaded.items()] if isinstance(loaded, dict) else loaded
    out = {}
    for record in records:
        name = next((record.get(c) for c in ("file", "image", "path") if record.get(c)), None)
        if name is None:
            raise UsageError(f"{path}: every metadata record needs a `file`, `image` or `path` field")
        out[str(name)] = {k: v for k, v in record.items() if k not in ("file", "image", "path")}
    return out


def folder_samples(source: Path, metadata: dict[str, dict[str, Any]]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Samples for every image under `source`, in sorted path order."""
    used: set[str] = set()
    for path in sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        relative = path.relative_to(source)
        members = {IMAGE_SUFFIXES[path.suffix.lower()]: path.read_bytes()}
        meta = metadata.get(str(relative), metadata.get(path.name))
        if meta is not None:
            members["json"] = json.dumps(meta, sort_keys=True).encode()
        yield sample_key(relative, used), members


def folder_to_shards(
    source: Path, out_dir: Path, samples_per_shard: int, metadata_file: Path | None = None, prefix: str = "shard"
) -> list[Path]:
    if not source.is_dir():
        raise UsageError(f"not a directory: {source}")
    paths = write_shards(folder_samples(source, load_metadata(metadata_file)), out_dir, samples_per_shard, prefix)
    if not paths:
        raise UsageError(f"no images (.jpg, .jpeg, .png, .webp) under {source}")
    return paths

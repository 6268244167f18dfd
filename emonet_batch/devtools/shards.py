"""Write WebDataset shards: an image folder (plus optional metadata) -> shard-00000.tar, ...

Members of a sample are written together (contiguous) under a unique key by webdataset's ShardWriter, with
fixed mtimes and owners so the same input gives byte-identical shards.
"""

from __future__ import annotations

import csv
import glob
import itertools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..analysis.summary import counted, listed
from ..errors import UsageError, first_line

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
    records = metadata_records(path)
    out = {}
    for record in records:
        if not isinstance(record, dict):
            raise UsageError(f"{path}: every metadata record must be an object, not {json.dumps(record)[:40]}")
        name = next((record.get(c) for c in ("file", "image", "path") if record.get(c)), None)
        if name is None:
            raise UsageError(f"{path}: every metadata record needs a `file`, `image` or `path` field")
        fields = {k: v for k, v in record.items() if k not in ("file", "image", "path")}
        if out.setdefault(str(name), fields) != fields:
            raise UsageError(f"{path}: two metadata records name {name} with different fields; keep one")
    return out


def metadata_records(path: Path) -> list[Any]:
    """The records of a metadata file, or one line saying why it cannot be read."""
    kind = "CSV" if path.suffix.lower() == ".csv" else "JSON"
    try:
        if kind == "CSV":
            with open(path, newline="", encoding="utf-8") as handle:
                return list(csv.DictReader(handle))
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, csv.Error) as exc:  # JSON and UTF-8 decode errors are ValueErrors
        raise UsageError(f"{path} cannot be read as UTF-8 {kind}: {first_line(exc)}") from None
    if isinstance(loaded, dict):
        return [{"file": name, **value} if isinstance(value, dict) else value for name, value in loaded.items()]
    if isinstance(loaded, list):
        return loaded
    raise UsageError(f"{path}: metadata is a JSON object keyed by file name or a list of objects")


@dataclass
class Packed:
    """What `shard` packed: the shards written, the images in them, and the metadata records that named an image
    and those that named none (a misspelt file column leaves every image without its metadata)."""

    paths: list[Path] = field(default_factory=list)
    images: int = 0
    matched: set[str] = field(default_factory=set)
    unmatched: list[str] = field(default_factory=list)


def metadata_name(relative: Path, metadata: dict[str, dict[str, Any]]) -> str | None:
    """The metadata record of an image: the one naming its path under the folder, else its file name."""
    return next((n for n in (str(relative), relative.name) if n in metadata), None)


def check_one_image_each(source: Path, images: list[Path], metadata: dict[str, dict[str, Any]]) -> None:
    """A record named by file name alone that would go to images in several folders is refused, never given
    to faces it was not written for."""
    given: dict[str, list[str]] = {}
    for path in images:
        relative = path.relative_to(source)
        if (name := metadata_name(relative, metadata)) is not None:
            given.setdefault(name, []).append(str(relative))
    shared = next(((name, paths) for name, paths in given.items() if len(paths) > 1), None)
    if shared:
        name, paths = shared
        raise UsageError(
            f"the metadata record {name} names {len(paths)} images ({listed(paths)}): name each by its path under "
            f"{source}"
        )


def folder_samples(
    source: Path, images: list[Path], metadata: dict[str, dict[str, Any]], packed: Packed
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Samples for the images under `source`, in order, counted in `packed`."""
    used: set[str] = set()
    for path in images:
        relative = path.relative_to(source)
        members = {IMAGE_SUFFIXES[path.suffix.lower()]: path.read_bytes()}
        name = metadata_name(relative, metadata)
        if name is not None:
            members["json"] = json.dumps(metadata[name], sort_keys=True).encode()
            packed.matched.add(name)
        packed.images += 1
        yield sample_key(relative, used), members


def image_files(source: Path) -> list[Path]:
    """The images under `source`, sorted; a link to an image that is not there (a dataset whose files were never
    fetched) is refused rather than left out."""
    images = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
    broken = [str(p.relative_to(source)) for p in images if not p.is_file()]
    if broken:
        raise UsageError(
            f"{counted(len(broken), 'image')} under {source} {'is a link' if len(broken) == 1 else 'are links'} to "
            f"nothing ({listed(broken)}): fetch their files or remove the links"
        )
    return images


def clear_earlier_shards(out_dir: Path, prefix: str, overwrite: bool) -> None:
    """Shards of an earlier packing left beside new ones (more of them, from a smaller --shard-size) would be scored
    too, their images twice: refused, or with `overwrite` removed first."""
    earlier = sorted(out_dir.glob(f"{glob.escape(prefix)}-[0-9][0-9][0-9][0-9][0-9].tar"))
    if earlier and not overwrite:
        raise UsageError(
            f"{out_dir} already holds {counted(len(earlier), 'shard')} ({earlier[0].name}"
            f"{f' .. {earlier[-1].name}' if len(earlier) > 1 else ''}); pass --overwrite to replace them"
        )
    for path in earlier:
        path.unlink()


def folder_to_shards(
    source: Path,
    out_dir: Path,
    samples_per_shard: int,
    metadata_file: Path | None = None,
    prefix: str = "shard",
    overwrite: bool = False,
) -> Packed:
    if not source.is_dir():
        raise UsageError(f"not a directory: {source}")
    metadata, packed, images = load_metadata(metadata_file), Packed(), image_files(source)
    check_one_image_each(source, images, metadata)
    clear_earlier_shards(out_dir, prefix, overwrite)
    packed.paths = write_shards(folder_samples(source, images, metadata, packed), out_dir, samples_per_shard, prefix)
    if not packed.paths:
        raise UsageError(f"no images (.jpg, .jpeg, .png, .webp) under {source}")
    packed.unmatched = sorted(set(metadata) - packed.matched)
    return packed

"""Models from object storage: `--model s3://...` (any fsspec URL) is downloaded once per node into a local
cache keyed by the model id, verified against the sha256 its model.json records, and shared by every process
of that node.

One process downloads while the others wait on a file lock (filelock, which works across processes on one
machine); the files land in a staging folder of the cache and are renamed into place only after every hash
matched, so a half-written entry is never used. An entry is checked whenever it is used (hashed again when a file
changed since it was last hashed), and a corrupted one is downloaded anew.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import ModelError, first_line
from ..model.record import MODEL_JSON, load_model_info, model_id, recorded_files
from .config import StorageOptions
from .storage import filesystem, join, redact_url

#: Beside an entry `<id>`, `<id>.verified`: its files' sizes and modification times when their hashes last matched.
VERIFIED_SUFFIX = ".verified"
#: Where models from object storage are kept on each node when no --model-cache is given.
DEFAULT_MODEL_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "emonet-batch", "models")


def is_remote(model: str) -> bool:
    return "://" in model and not model.startswith("file://")


def local_model(model: str, storage: StorageOptions, cache: str | None = None, expected_id: str | None = None) -> Path:
    """A directory holding `model` on this node: the path itself when local, else the verified cache entry.
    `expected_id` (the id the run's driver checked): a cached entry of that id is used without reaching the
    store, and a model that changed at its URL since is refused."""
    if not is_remote(model):
        return Path(model.removeprefix("file://"))
    from filelock import FileLock

    cache_root = Path(cache or DEFAULT_MODEL_CACHE)
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the model cache {cache_root}: {exc.strerror}") from None
    if expected_id is not None:
        with FileLock(str(cache_root / f"{expected_id}.lock")):
            if _usable(cache_root / expected_id):
                return cache_root / expected_id
    fs, root = filesystem(model, storage)
    try:
        record_bytes = _record_bytes(fs, root, model)
        record = json.loads(record_bytes)
        names, identity = list(recorded_files(record)), model_id(record)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot read {MODEL_JSON} of the model {redact_url(model)}: {first_line(exc)}") from None
    if expected_id is not None and identity != expected_id:
        raise ModelError(f"the model at {redact_url(model)} changed during the run (its id is now {identity[:12]})")
    entry = cache_root / identity
    with FileLock(str(cache_root / f"{identity}.lock")):
        if not _usable(entry):
            _download(fs, root, names, record_bytes, entry, model)
    return entry


def _record_bytes(fs, root: str, model: str) -> bytes:
    try:
        return fs.cat_file(join(root, MODEL_JSON))
    except FileNotFoundError:
        raise ModelError(f"no exported model at {redact_url(model)} (it holds no {MODEL_JSON})") from None


def _usable(entry: Path) -> bool:
    """The entry holds its model intact: unchanged (size and modification time) since it was last hashed, or
    every recorded file matches its sha256 now. Hashing a full model takes seconds, and every actor of a node
    asks in turn under the lock."""
    if not entry.is_dir():
        return False
    try:
        if json.loads(_marker(entry).read_text()) == _stats(entry):
            return True
    except (OSError, ValueError):
        pass
    try:
        load_model_info(entry)  # every recorded file against its sha256
        _mark_verified(entry)
    except (ModelError, OSError):
        return False
    return True


def _marker(entry: Path) -> Path:
    return entry.with_name(entry.name + VERIFIED_SUFFIX)


def _mark_verified(entry: Path) -> None:
    _marker(entry).write_text(json.dumps(_stats(entry)))


def _stats(entry: Path) -> dict[str, list[int]]:
    return {path.name: [(stat := path.stat()).st_size, stat.st_mtime_ns] for path in sorted(entry.iterdir())}


def _download(fs, root: str, names: list[str], record_bytes: bytes, entry: Path, model: str) -> None:
    staging = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name[:12]}-"))
    try:
        for name in names:
            fs.get_file(join(root, name), str(staging / name))
        (staging / MODEL_JSON).write_bytes(record_bytes)
        load_model_info(staging)  # a file that does not match its recorded hash never becomes the entry
        shutil.rmtree(entry, ignore_errors=True)  # a corrupted entry
        os.replace(staging, entry)
        _mark_verified(entry)
    except (OSError, ModelError) as exc:
        raise ModelError(f"cannot fetch the model {redact_url(model)}: {first_line(exc)}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)

"""An exported model directory: `model.onnx`, its weights, and `model.json`.

A full model's weights are in `model.onnx.data`, shared by three graphs: `model.onnx` (the fused graph),
`tower.onnx` and `heads.onnx` (its two halves, for the CPU path: the tower one image a call, the heads on
fixed-size batches). A heads-only model is `model.onnx` alone (its weights inside).

model.json is the record every consumer reads (heads in output order, image size, resize filter,
neutral means, hashes). Loading verifies the ONNX files against their recorded sha256, so a model that
was changed or half-copied is refused instead of silently writing wrong labels. No torch here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ModelError

MODEL_JSON = "model.json"
MODEL_ONNX = "model.onnx"
#: A full model's fused graph in two halves (pixels -> embedding, embedding -> scores), sharing its weights file.
TOWER_ONNX, HEADS_ONNX = "tower.onnx", "heads.onnx"
#: The version of model.json's layout this code reads and the export writes; a newer record is refused.
FORMAT_VERSION = 1
#: model.json facts that change a label's values or columns; with the files' hashes they make the model id.
LABEL_FACTS = ("heads", "image_size", "embedding_dim", "resize_filter", "normalize", "precision", "neutral_means")
#: model.json facts the export also writes into the ONNX file's metadata (as `emonet_batch.<fact>`, JSON).
MIRRORED_FACTS = ("heads", "head_size", "image_size", "embedding_dim", "normalize", "resize_filter", "precision")
METADATA_PREFIX = "emonet_batch."
#: The fused graph's interface: uint8 pixels in, raw head scores and the embedding out.
GRAPH_INPUT = "pixels"
GRAPH_OUTPUTS = ("scores", "embedding")
#: A heads-only graph's interface: the tower's embedding in, raw head scores out.
HEADS_INPUT = "embedding"
HEADS_OUTPUTS = ("scores",)
#: model.json `kind`: the tower and heads (pixels in), or the heads only (embeddings in).
FULL, HEADS_ONLY = "full", "heads"


@dataclass(frozen=True)
class ModelInfo:
    """What model.json records; `directory` is where it was read from."""

    directory: Path
    heads: tuple[str, ...]
    image_size: int
    embedding_dim: int
    head_size: str
    normalize: bool
    resize_filter: str
    precision: str
    neutral_means: dict[str, float]
    files: dict[str, str]  # file name in the directory -> sha256
    record: dict[str, Any] = field(repr=False)
    kind: str
    tower_id: str  # the embeddings' tower (see tower_id())

    @property
    def heads_only(self) -> bool:
        return self.kind == HEADS_ONLY

    @property
    def onnx_path(self) -> Path:
        return self.directory / MODEL_ONNX

    @property
    def tower_path(self) -> Path:
        return self.directory / TOWER_ONNX

    @property
    def heads_path(self) -> Path:
        """The graph that maps embeddings to scores: a heads-only model's own, or a full model's second half."""
        return self.onnx_path if self.heads_only else self.directory / HEADS_ONNX

    @property
    def model_id(self) -> str:
        """Identifies what produced a label: the sha256 over every file of the graph (the graphs and their
        weights) and every recorded fact that changes scores or their columns (LABEL_FACTS)."""
        return model_id(self.record)


def model_id(record: dict[str, Any]) -> str:
    identity = {"files": record["files"], **{fact: record.get(fact) for fact in LABEL_FACTS}}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def recorded_files(record: dict[str, Any]) -> dict[str, str]:
    """The files a record lists, with their sha256. Each must be a plain name inside the model's directory: a
    record fetched from a URL says where on each node its files are written."""
    files = dict(record["files"])
    for name in files:
        if not isinstance(name, str) or name in ("", ".", "..", MODEL_JSON) or "/" in name or "\\" in name:
            raise ValueError(f"the recorded file {name!r} is not a plain file name of the model's directory")
    return files


def tower_id(encoder_hashes: dict[str, str], normalize: bool) -> str:
    """Identifies the embeddings a tower gives: the sha256 of its checkpoint files and whether the embedding is
    L2-normalised. A full model records the id of its tower; a heads-only model the id of the tower whose
    embeddings it reads (any precision of that tower: they differ within the recorded accuracy)."""
    identity = {"encoder": encoder_hashes, "normalize": normalize}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_model_json(directory: Path, record: dict[str, Any]) -> Path:
    path = directory / MODEL_JSON
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def load_model_info(directory: str | Path, verify: bool = True) -> ModelInfo:
    """Read model.json; with verify, check every recorded file's sha256."""
    directory = Path(directory)
    path = directory / MODEL_JSON
    if not path.is_file():
        raise ModelError(f"not an exported model directory (no {MODEL_JSON}): {directory}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise TypeError(f"a JSON {type(record).__name__}, not an object")
        check_format_version(record, path)
        info = ModelInfo(
            directory=directory,
            heads=tuple(record["heads"]),
            image_size=int(record["image_size"] or 0),  # null for a heads-only model
            embedding_dim=int(record["embedding_dim"]),
            head_size=record["head_size"],
            normalize=bool(record["normalize"]),
            resize_filter=record["resize_filter"] or "",
            precision=record["precision"],
            neutral_means={k: float(v) for k, v in record["neutral_means"].items()},
            files=recorded_files(record),
            record=record,
            kind=record["kind"],
            tower_id=record["tower_id"],
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: malformed model record ({type(exc).__name__}: {exc})") from None
    missing = [name for name in (TOWER_ONNX, HEADS_ONNX) if info.kind == FULL and name not in info.files]
    if missing:
        raise ModelError(f"{path}: a full model without {' and '.join(missing)} (an earlier export); re-export it")
    if verify:
        verify_files(info)
    check_mirror(info)
    return info


def check_format_version(record: dict[str, Any], path: Path) -> None:
    version = record.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelError(
            f"{path}: model record format {version!r} is newer than this emonet-batch reads ({FORMAT_VERSION}); "
            "upgrade emonet-batch or re-export the model"
        )


def verify_files(info: ModelInfo) -> None:
    for name, expected in info.files.items():
        file = info.directory / name
        if not file.is_file():
            raise ModelError(f"{file}: recorded in {MODEL_JSON} but missing")
        actual = sha256_file(file)
        if actual != expected:
            raise ModelError(
                f"{file}: sha256 {actual[:12]}... does not match the recorded {expected[:12]}... "
                "(modified or incomplete copy)"
            )


def check_mirror(info: ModelInfo) -> None:
    """model.json and the metadata inside model.onnx must agree: a record edited or copied beside another
    graph (heads reordered, another precision) would put scores under the wrong columns."""
    path = info.onnx_path
    if not path.is_file():
        raise ModelError(f"{path}: recorded in {MODEL_JSON} but missing")
    mirror = onnx_metadata(path)
    for fact in MIRRORED_FACTS:
        key = METADATA_PREFIX + fact
        if key not in mirror:
            raise ModelError(f"{path} does not carry the {fact} its {MODEL_JSON} records; re-export the model")
        if json.loads(mirror[key]) != info.record.get(fact):
            raise ModelError(
                f"{info.directory}: {MODEL_JSON} and {MODEL_ONNX} disagree on {fact} "
                f"({json.dumps(info.record.get(fact))[:80]} vs {mirror[key][:80]}); re-export the model"
            )


def onnx_metadata(path: Path) -> dict[str, str]:
    """The metadata_props of an ONNX file, read without loading its graph.

    Written here instead of calling the onnx package: onnx is an export-only dependency, and parsing the
    model would read the whole graph (up to 1.5 GiB) for a few strings. A ModelProto is a sequence of
    protobuf fields; every one but metadata_props (field 14) is skipped by its length."""
    props = {}
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        while handle.tell() < size:
            number, wire = _field_key(handle)
            if wire == _LENGTH_DELIMITED:
                length = _varint(handle)
                if number == _METADATA_PROPS:
                    key, value = _string_pair(handle.read(length))
                    props[key] = value
                else:
                    handle.seek(length, io.SEEK_CUR)
            elif wire == _VARINT:
                _varint(handle)
            elif wire in _FIXED_WIDTHS:
                handle.seek(_FIXED_WIDTHS[wire], io.SEEK_CUR)
            else:
                raise ModelError(f"{path}: not an ONNX file (protobuf wire type {wire})")
    return props


_VARINT, _LENGTH_DELIMITED, _FIXED_WIDTHS, _METADATA_PROPS = 0, 2, {1: 8, 5: 4}, 14


def _varint(stream: BinaryIO) -> int:
    value, shift = 0, 0
    while byte := stream.read(1):
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
    raise ModelError("truncated ONNX file")


def _field_key(stream: BinaryIO) -> tuple[int, int]:
    key = _varint(stream)
    return key >> 3, key & 7


def _string_pair(data: bytes) -> tuple[str, str]:
    """A StringStringEntryProto: key (field 1) and value (field 2)."""
    stream, found = io.BytesIO(data), {1: "", 2: ""}
    while stream.tell() < len(data):
        number, wire = _field_key(stream)
        if wire != _LENGTH_DELIMITED:
            raise ModelError("malformed ONNX metadata entry")
        try:
            found[number] = stream.read(_varint(stream)).decode("utf-8")
        except UnicodeDecodeError:
            raise ModelError("malformed ONNX metadata entry (not UTF-8)") from None
    return found[1], found[2]

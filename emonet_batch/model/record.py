"""An exported model directory: `model.onnx` (+ `model.onnx.data` when the weights pass 1.5 GiB) and `model.json`.

model.json is the record every consumer reads (heads in output order, image size, resize filter,
neutral means, hashes). Loading verifies the ONNX files against their recorded sha256, so a model that
was changed or half-copied is refused instead of silently writing wrong labels. No torch here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError

MODEL_JSON = "model.json"
MODEL_ONNX = "model.onnx"
#: The version of model.json's layout this code reads and the export writes; a newer record is refused.
FORMAT_VERSION = 1
#: The fused graph's interface: uint8 pixels in, raw head scores and the embedding out.
GRAPH_INPUT = "pixels"
GRAPH_OUTPUTS = ("scores", "embedding")


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

    @property
    def onnx_path(self) -> Path:
        return self.directory / MODEL_ONNX

    @property
    def model_id(self) -> str:
        """sha256 of model.onnx: identifies the exact graph that produced a label."""
        return self.files[MODEL_ONNX]


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
        check_format_version(record, path)
        info = ModelInfo(
            directory=directory,
            heads=tuple(record["heads"]),
            image_size=int(record["image_size"]),
            embedding_dim=int(record["embedding_dim"]),
            head_size=record["head_size"],
            normalize=bool(record["normalize"]),
            resize_filter=record["resize_filter"],
            precision=record["precision"],
            neutral_means={k: float(v) for k, v in record["neutral_means"].items()},
            files=dict(record["files"]),
            record=record,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: malformed model record ({type(exc).__name__}: {exc})") from None
    if verify:
        verify_files(info)
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

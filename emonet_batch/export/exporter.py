"""Export Empathic Insight Face to one fused, verified ONNX graph (needs the `export` extra).

Resolve the checkpoints (hub), load them (checkpoint), build and write the fused graph (graph, quantize),
check it against the unfused PyTorch reference (parity), and only then write model.json, so a directory
without model.json was never verified and is never loaded.
"""

from __future__ import annotations

import copy
import platform
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import ExportError, ModelError, UsageError
from ..model.accuracy import Parity
from ..model.postprocess import packaged_neutral_means
from ..model.record import (
    FORMAT_VERSION,
    FULL,
    GRAPH_INPUT,
    GRAPH_OUTPUTS,
    HEADS_INPUT,
    HEADS_ONLY,
    HEADS_ONNX,
    HEADS_OUTPUTS,
    MODEL_JSON,
    MODEL_ONNX,
    TOWER_ONNX,
    load_model_info,
    sha256_file,
    tower_id,
    write_model_json,
)
from .checkpoint import Encoder, HeadSet, load_encoder, load_heads
from .graph import BatchedHeads, FusedModel, to_fp16, write_onnx
from .hub import resolve_checkpoint
from .parity import FP32_PARITY_TOLERANCE, check_decode, check_heads_parity, check_parity
from .quantize import INT8_QUANTIZATION
from .reference import ReferenceModel

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ExportConfig:
    """Everything an export needs. Either encoder+heads (paths or hub ids) or synthetic is set."""

    out: Path
    encoder: str | None = None
    heads: str | None = None
    synthetic: str | None = None  # a synthetic.TOWERS name
    head_size: str = "large"  # for synthetic checkpoints
    seed: int = 0
    only_heads: tuple[str, ...] | None = None
    precision: str = "fp32"
    normalize: bool = True
    opset: int = 20  # 20: GELU is one operator (faster than the decomposition older opsets need)
    parity_images: int | None = None  # calibration images for the accuracy record; None: 4 for fp32, 16 otherwise
    overwrite: bool = False
    heads_only: bool = False  # a model whose input is the tower's embedding (see export_heads_only)


@dataclass
class ExportResult:
    directory: Path
    record: dict[str, Any]
    parity: Parity
    seconds: dict[str, float] = field(default_factory=dict)


def export_model(config: ExportConfig) -> ExportResult:
    """Resolve checkpoints, export, verify parity, then write model.json (last). An export that fails (or is
    interrupted) leaves no model files behind, and removes the --out folder it created: a half-written model would
    make the next attempt ask for --overwrite."""
    _check_config(config)
    created = not config.out.exists()
    _prepare_out(config.out, config.overwrite)
    try:
        return export_heads_only(config) if config.heads_only else _export_full(config)
    except BaseException:
        if created:
            shutil.rmtree(config.out, ignore_errors=True)
        else:
            _remove_model_files(config.out)
        raise


def _export_full(config: ExportConfig) -> ExportResult:
    seconds: dict[str, float] = {}
    out = config.out
    encoder, heads, sources, hashes = _load(config, seconds)
    neutral = packaged_neutral_means()
    metadata = _graph_metadata(config, encoder, heads, hashes)

    started = time.perf_counter()
    fused = FusedModel(encoder, heads, config.normalize).eval()
    if config.precision == "fp16":
        # the reference below keeps its own fp32 tower: copy before converting
        fused = to_fp16(copy.deepcopy(fused))
    example = torch.zeros(2, encoder.image_size, encoder.image_size, 3, dtype=torch.uint8)
    onnx_files = write_onnx(fused, out, example, config.opset, metadata)
    seconds["export"] = time.perf_counter() - started

    started = time.perf_counter()
    reference = ReferenceModel(encoder.model, heads, config.normalize).eval()
    images = config.parity_images or (4 if config.precision == "fp32" else 16)
    parity = check_parity(reference, out, heads.columns, neutral, encoder.image_size, images, config.seed)
    metadata["decode_parity"] = check_decode(
        reference, out / MODEL_ONNX, heads.columns, neutral, encoder.image_size, encoder.resize_filter, config.seed
    )
    seconds["parity"] = time.perf_counter() - started
    return _finish(config, metadata, heads, neutral, parity, onnx_files, sources, hashes, seconds)


def export_heads_only(config: ExportConfig) -> ExportResult:
    """Only the heads, as a model whose input is the tower's embedding (what `score --embedding` stores), for
    applying other heads to stored embeddings without the tower (~519 GFLOP an image against a few MFLOP). The
    encoder is read for its identity and width only: the record names the tower whose embeddings the model
    reads (`tower_id`). fp32 only: the heads cost next to nothing. Parity is against the heads in PyTorch on
    the same (random, normalised as the tower's are) embeddings."""
    seconds: dict[str, float] = {}
    encoder, heads, sources, hashes = _load(config, seconds)
    neutral = packaged_neutral_means()
    metadata = {
        **_graph_metadata(config, encoder, heads, hashes),
        "kind": HEADS_ONLY,
        "image_size": None,
        "resize_filter": None,
        "inputs": {HEADS_INPUT: "float32 [N, D] the tower's embedding as `score --embedding` stores it"},
        "outputs": {HEADS_OUTPUTS[0]: "float32 [N, H] raw head outputs, in the order of `heads`"},
    }
    started = time.perf_counter()
    example = torch.zeros(2, encoder.width)
    files = write_onnx(
        BatchedHeads(heads).eval(), config.out, example, config.opset, metadata, (HEADS_INPUT, HEADS_OUTPUTS)
    )
    seconds["export"] = time.perf_counter() - started
    started = time.perf_counter()
    images = config.parity_images or 16
    parity = check_heads_parity(
        heads, config.out / MODEL_ONNX, neutral, encoder.width, config.normalize, images, config.seed
    )
    seconds["parity"] = time.perf_counter() - started
    return _finish(config, metadata, heads, neutral, parity, files, sources, hashes, seconds)


def _load(config: ExportConfig, seconds: dict[str, float]) -> tuple[Encoder, HeadSet, dict[str, str], dict[str, str]]:
    """The checkpoints: encoder (without its weights for a heads-only export), heads (of its width), their sources
    and every source file's sha256."""
    started = time.perf_counter()
    encoder_dir, heads_dir, sources = _checkpoint_dirs(config)
    seconds["checkpoint"] = time.perf_counter() - started
    started = time.perf_counter()
    encoder = load_encoder(encoder_dir, weights=not config.heads_only)
    heads = load_heads(heads_dir, config.only_heads)
    if heads.in_dim != encoder.width:
        raise ModelError(f"heads take {heads.in_dim}-d input but the encoder produces {encoder.width}-d embeddings")
    hashes = _source_hashes(encoder, heads)
    seconds["load"] = time.perf_counter() - started
    return encoder, heads, sources, hashes


def _finish(
    config: ExportConfig,
    metadata: dict[str, Any],
    heads: HeadSet,
    neutral: dict[str, float],
    parity: Parity,
    onnx_files: list[Path],
    sources: dict[str, str],
    source_hashes: dict[str, str],
    seconds: dict[str, float],
) -> ExportResult:
    """Check fp32 parity, then write model.json (last) and read it back."""
    if config.precision == "fp32" and not parity.max_abs_score_diff <= FP32_PARITY_TOLERANCE:
        raise ExportError(
            f"parity check failed: max |score difference| {parity.max_abs_score_diff:.3g} between ONNX Runtime and "
            f"PyTorch exceeds {FP32_PARITY_TOLERANCE:g}; the ONNX file in {config.out} is not usable"
        )
    record = {
        "format_version": FORMAT_VERSION,
        **metadata,
        "neutral_means": neutral_subset(neutral, heads.columns),
        "opset": config.opset,
        "parity": parity.as_dict(),
        "files": {path.name: sha256_file(path) for path in onnx_files},
        "sources": {**sources, "sha256": source_hashes},
        "versions": _versions(),
    }
    write_model_json(config.out, record)
    load_model_info(config.out)  # proves the record reads back and the hashes verify
    return ExportResult(config.out, record, parity, seconds)


def _check_config(config: ExportConfig) -> None:
    if config.precision not in PRECISIONS:
        raise UsageError(f"unknown precision {config.precision!r}; choose from {', '.join(PRECISIONS)}")
    if config.synthetic and (config.encoder or config.heads):
        raise UsageError("give either --synthetic or --encoder/--heads, not both")
    if not config.synthetic and not (config.encoder and config.heads):
        raise UsageError("export needs --encoder and --heads (paths or hub ids), or --synthetic tiny|full")
    if config.heads_only and config.precision != "fp32":
        raise UsageError("--heads-only exports fp32 only: the heads are a few MFLOP an image, nothing to save")
    if config.opset < 17:
        raise UsageError(f"opset {config.opset} is too old: LayerNormalization needs opset 17 or newer")


def _prepare_out(out: Path, overwrite: bool) -> None:
    if (out / MODEL_JSON).exists() or (out / MODEL_ONNX).exists():
        if not overwrite:
            raise UsageError(f"{out} already holds a model; pass --overwrite to replace it")
        _remove_model_files(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, a dangling link, no permission
        raise UsageError(f"cannot create the output directory {out}: {exc.strerror}") from None


def _remove_model_files(out: Path) -> None:
    for name in (MODEL_JSON, MODEL_ONNX, MODEL_ONNX + ".data", TOWER_ONNX, HEADS_ONNX):
        (out / name).unlink(missing_ok=True)


def _checkpoint_dirs(config: ExportConfig) -> tuple[Path, Path, dict[str, str]]:
    if config.synthetic:
        from .synthetic import write_synthetic_checkpoint

        root = config.out / "checkpoint"
        shutil.rmtree(root, ignore_errors=True)
        encoder_dir, heads_dir = write_synthetic_checkpoint(root, config.synthetic, config.head_size, config.seed)
        label = f"synthetic:{config.synthetic}/{config.head_size}/seed={config.seed}"
        return encoder_dir, heads_dir, {"encoder": label, "heads": label}
    encoder_dir, encoder_source = resolve_checkpoint(config.encoder, "encoder")
    heads_dir, heads_source = resolve_checkpoint(config.heads, "heads")
    return encoder_dir, heads_dir, {"encoder": encoder_source, "heads": heads_source}


def neutral_subset(neutral: dict[str, float], columns: Sequence[str]) -> dict[str, float]:
    return {column: neutral[column] for column in columns}


def _graph_metadata(
    config: ExportConfig, encoder: Encoder, heads: HeadSet, source_hashes: dict[str, str]
) -> dict[str, Any]:
    """The facts consumers need, recorded in model.json and mirrored in the ONNX metadata."""
    encoder_hashes = {name: digest for name, digest in source_hashes.items() if name.startswith("encoder/")}
    return {
        "kind": FULL,
        "tower_id": tower_id(encoder_hashes, config.normalize),
        "heads": list(heads.columns),
        "head_size": heads.head_size,
        "image_size": encoder.image_size,
        "embedding_dim": encoder.width,
        "normalize": config.normalize,
        "resize_filter": encoder.resize_filter,
        "precision": config.precision,
        **({"quantization": INT8_QUANTIZATION} if config.precision == "int8" else {}),
        "inputs": {GRAPH_INPUT: "uint8 [N, S, S, 3] RGB; x/255 and (x-0.5)/0.5 are inside the graph"},
        "outputs": dict(
            zip(
                GRAPH_OUTPUTS,
                (
                    "float32 [N, H] raw head outputs, in the order of `heads`",
                    "float32 [N, D] pooled embedding as the heads see it (L2-normalised when `normalize`)",
                ),
            )
        ),
    }


def _source_hashes(encoder: Encoder, heads: HeadSet) -> dict[str, str]:
    hashes = {f"encoder/{path.name}": sha256_file(path) for path in encoder.files}
    hashes.update({f"heads/{path.name}": sha256_file(path) for path in heads.files})
    return hashes


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import transformers

    return {
        "emonet_batch": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }

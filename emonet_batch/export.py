"""Export Empathic Insight Face to one fused, verified ONNX graph (needs the `export` extra).

Graph: pixels uint8 [N,S,S,3] -> x/255, (x-0.5)/0.5 -> SigLIP tower -> pooled embedding (L2-normalised
when recorded) -> all heads as a few batched matrix products -> scores float32 [N,H], embedding [N,D].
Every export is checked against the unfused PyTorch reference before model.json is written, so a
directory without model.json was never verified and is never loaded.
"""

from __future__ import annotations

import copy
import json
import platform
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from . import __version__
from .accuracy import Parity, compare_outputs, parity_pixels
from .checkpoint import Encoder, HeadSet, load_encoder, load_heads
from .errors import ExportError, ModelError, UsageError
from .hub import resolve_checkpoint
from .model import FORMAT_VERSION, MODEL_ONNX, load_model_info, sha256_file, write_model_json
from .postprocess import packaged_neutral_means
from .reference import ReferenceModel, embed

PRECISIONS = ("fp32", "fp16", "int8")
#: Weights above this go to model.onnx.data: protobuf cannot hold a file over 2 GiB, and serialising
#: close to that limit fails on the graph's own overhead, so keep a wide margin.
EXTERNAL_DATA_BYTES = 3 * 1024**3 // 2
FP32_PARITY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportConfig:
    """Everything an export needs. Either encoder+heads (paths or hub ids) or synthetic is set."""

    out: Path
    encoder: str | None = None
    heads: str | None = None
    synthetic: str | None = None  # "tiny" | "full"
    head_size: str = "large"  # for synthetic checkpoints
    seed: int = 0
    only_heads: tuple[str, ...] | None = None
    precision: str = "fp32"
    normalize: bool = True
    opset: int = 20  # 20: GELU is one operator; the fp32 tower ran 0.233 vs 0.195 images/s at 18 on 2 CPU cores
    parity_images: int | None = None  # calibration images for the accuracy record; None: 4 for fp32, 16 otherwise
    overwrite: bool = False


@dataclass
class ExportResult:
    directory: Path
    record: dict[str, Any]
    parity: Parity
    seconds: dict[str, float] = field(default_factory=dict)


class FusedModel(nn.Module):
    """Tower + all heads as batched matrix products: the first head layer of every head is one
    [D, H*h0] matmul; each later layer is one batched matmul over the H heads."""

    def __init__(self, encoder: Encoder, heads: HeadSet, normalize: bool):
        super().__init__()
        self.tower = encoder.model
        self.normalize = normalize
        linears = [head.linears for head in heads.modules]  # [H][layers]
        self.first = nn.Linear(heads.in_dim, sum(layer[0].out_features for layer in linears))
        with torch.no_grad():
            self.first.weight.copy_(torch.cat([layer[0].weight for layer in linears], dim=0))
            self.first.bias.copy_(torch.cat([layer[0].bias for layer in linears], dim=0))
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for depth in range(1, len(linears[0])):
            # [H, in, out] and [H, 1, out], so that [H, N, in] @ [H, in, out] + bias runs every head at once
            self.weights.append(nn.Parameter(torch.stack([layer[depth].weight.t() for layer in linears]), requires_grad=False))
            self.biases.append(nn.Parameter(torch.stack([layer[depth].bias[None, :] for layer in linears]), requires_grad=False))
        self.num_heads = len(linears)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = embed(self.tower, pixels, self.normalize)
        hidden = torch.relu(self.first(embedding))
        hidden = hidden.reshape(hidden.shape[0], self.num_heads, -1).transpose(0, 1)  # [H, N, h0]
        for depth, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            hidden = torch.matmul(hidden, weight) + bias
            if depth < len(self.weights) - 1:
                hidden = torch.relu(hidden)
        scores = hidden.squeeze(-1).transpose(0, 1)  # [N, H]
        return scores, embedding


def export_model(config: ExportConfig) -> ExportResult:
    """Resolve checkpoints, export, verify parity, then write model.json (last)."""
    _check_config(config)
    seconds: dict[str, float] = {}
    out = config.out
    _prepare_out(out, config.overwrite)
    started = time.perf_counter()
    encoder_dir, heads_dir, sources = _checkpoint_dirs(config)
    seconds["checkpoint"] = time.perf_counter() - started

    started = time.perf_counter()
    encoder = load_encoder(encoder_dir)
    heads = load_heads(heads_dir, config.only_heads)
    if heads.in_dim != encoder.width:
        raise ModelError(f"heads take {heads.in_dim}-d input but the encoder produces {encoder.width}-d embeddings")
    neutral = packaged_neutral_means()
    metadata = _graph_metadata(config, encoder, heads, neutral)
    seconds["load"] = time.perf_counter() - started

    started = time.perf_counter()
    fused = FusedModel(encoder, heads, config.normalize).eval()
    if config.precision == "fp16":
        # the reference below keeps its own fp32 tower: copy before converting
        fused = to_fp16(copy.deepcopy(fused))
    onnx_files = write_onnx(fused, out, encoder.image_size, config.opset, metadata)
    seconds["export"] = time.perf_counter() - started

    started = time.perf_counter()
    reference = ReferenceModel(encoder.model, heads, config.normalize).eval()
    images = config.parity_images or (4 if config.precision == "fp32" else 16)
    parity = check_parity(reference, out / MODEL_ONNX, heads.columns, neutral, encoder.image_size, images, config.seed)
    seconds["parity"] = time.perf_counter() - started
    if config.precision == "fp32" and not parity.max_abs_score_diff <= FP32_PARITY_TOLERANCE:
        raise ExportError(
            f"parity check failed: max |score difference| {parity.max_abs_score_diff:.3g} between ONNX Runtime and "
            f"PyTorch exceeds {FP32_PARITY_TOLERANCE:g}; the ONNX file in {out} is not usable"
        )

    record = {
        "format_version": FORMAT_VERSION,
        **metadata,
        "neutral_means": neutral_subset(neutral, heads.columns),
        "opset": config.opset,
        "parity": parity.as_dict(),
        "files": {path.name: sha256_file(path) for path in onnx_files},
        "sources": {**sources, "sha256": _source_hashes(encoder, heads)},
        "versions": _versions(),
    }
    write_model_json(out, record)
    load_model_info(out)  # proves the record reads back and the hashes verify
    return ExportResult(out, record, parity, seconds)


def _check_config(config: ExportConfig) -> None:
    if config.precision not in PRECISIONS:
        raise UsageError(f"unknown precision {config.precision!r}; choose from {', '.join(PRECISIONS)}")
    if config.synthetic and (config.encoder or config.heads):
        raise UsageError("give either --synthetic or --encoder/--heads, not both")
    if not config.synthetic and not (config.encoder and config.heads):
        raise UsageError("export needs --encoder and --heads (paths or hub ids), or --synthetic tiny|full")
    if config.opset < 17:
        raise UsageError(f"opset {config.opset} is too old: LayerNormalization needs opset 17 or newer")


def _prepare_out(out: Path, overwrite: bool) -> None:
    if (out / "model.json").exists() or (out / MODEL_ONNX).exists():
        if not overwrite:
            raise UsageError(f"{out} already holds a model; pass --overwrite to replace it")
        for name in ("model.json", MODEL_ONNX, MODEL_ONNX + ".data"):
            (out / name).unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, a dangling link, no permission
        raise UsageError(f"cannot create the output directory {out}: {exc.strerror}") from None


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


def _graph_metadata(config: ExportConfig, encoder: Encoder, heads: HeadSet, neutral: dict[str, float]) -> dict[str, Any]:
    """The facts consumers need, recorded in model.json and mirrored in the ONNX metadata."""
    return {
        "heads": list(heads.columns),
        "head_size": heads.head_size,
        "image_size": encoder.image_size,
        "embedding_dim": encoder.width,
        "normalize": config.normalize,
        "resize_filter": encoder.resize_filter,
        "precision": config.precision,
        **({"quantization": INT8_QUANTIZATION} if config.precision == "int8" else {}),
        "inputs": {"pixels": "uint8 [N, S, S, 3] RGB; x/255 and (x-0.5)/0.5 are inside the graph"},
        "outputs": {
            "scores": "float32 [N, H] raw head outputs, in the order of `heads`",
            "embedding": "float32 [N, D] pooled embedding as the heads see it (L2-normalised when `normalize`)",
        },
    }


def write_onnx(model: FusedModel, out: Path, image_size: int, opset: int, metadata: dict[str, Any]) -> list[Path]:
    """Export to out/model.onnx (weights in model.onnx.data when over the protobuf limit)."""
    import onnx

    staging = out / ".export-staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        dummy = torch.zeros(2, image_size, image_size, 3, dtype=torch.uint8)
        batch = {0: "batch"}
        # The TorchScript exporter: it exports this model in well under a second for the tiny tower and
        # keeps our output names; the dynamo exporter (torch 2.13) collides an internal value with the
        # `embedding` output name and takes ~25x longer.
        with torch.no_grad(), warnings.catch_warnings():
            # tracing warns about Python-level branches in transformers' attention; they are shape-only
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter; see the comment above
            torch.onnx.export(
                model, (dummy,), str(staging / MODEL_ONNX), input_names=["pixels"], output_names=["scores", "embedding"],
                dynamic_axes={"pixels": batch, "scores": batch, "embedding": batch}, opset_version=opset, dynamo=False,
            )  # fmt: skip
        source = staging / MODEL_ONNX
        if metadata["precision"] == "int8":
            source = quantize_int8(source, staging / "model.int8.onnx")
        graph = onnx.load(str(source))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    graph.producer_name = "emonet-batch"
    graph.producer_version = __version__
    graph.doc_string = "Empathic Insight Face (SigLIP2 tower + emotion heads), fused by emonet-batch"
    onnx.helper.set_model_props(graph, {f"emonet_batch.{k}": json.dumps(v) for k, v in metadata.items()})
    return save_onnx(graph, out / MODEL_ONNX)


#: How --precision int8 quantises (recorded in model.json). Dynamic quantisation: int8 weights, activations
#: quantised per batch from their own range, so no calibration data can be unrepresentative. Only matrix
#: products with a 2-d constant weight (the tower's linear layers and the heads' first layer: ~90% of the
#: work) are quantised; attention's activation x activation products stay fp32 (quantising them gained
#: nothing here). 7-bit weights (reduce_range) keep the u8 x s8 AVX2/AVX-512 kernels (VPMADDUBSW) from
#: saturating their 16-bit sums, which otherwise cost the synthetic Large tower an embedding cosine of 0.92;
#: per-channel scales then bring max |Δ score| to ~0.003.
INT8_QUANTIZATION = {"method": "onnxruntime dynamic", "ops": ["MatMul", "Gemm"], "constant_weights_only": True,
                     "weights": "int8 per channel, 7-bit range", "activations": "uint8 per tensor, per batch"}  # fmt: skip


def quantize_int8(source: Path, target: Path) -> Path:
    """The fp32 graph at `source`, its weight matrix products in int8 (see INT8_QUANTIZATION), at `target`."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph  # shapes only: the weights stay on disk
    rank = {t.name: len(t.dims) for t in graph.initializer}
    # the heads' batched [H, in, out] products: per-channel scales of a 3-d weight are not supported, and
    # they are well under 1% of the work
    batched = [node.name for node in graph.node if node.op_type == "MatMul" and rank.get(node.input[1], 2) > 2]
    root = logging.getLogger()
    level = root.level
    # the quantiser logs a root-logger warning advising shape pre-processing; our graph comes straight from
    # the exporter with static shapes except the batch, which dynamic quantisation does not need
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            source, target, op_types_to_quantize=INT8_QUANTIZATION["ops"], per_channel=True, reduce_range=True,
            weight_type=QuantType.QInt8, nodes_to_exclude=batched, extra_options={"MatMulConstBOnly": True},
        )  # fmt: skip
    finally:
        root.setLevel(level)
    return target


class Fp32LayerNorm(nn.Module):
    """LayerNorm computed in fp32 inside an fp16 graph (SigLIP's activations overflow fp16 statistics)."""

    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        self.norm = norm.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.float()).to(x.dtype)


def to_fp16(model: FusedModel) -> FusedModel:
    """fp16 tower with LayerNorm in fp32; eager attention, whose softmax transformers runs in fp32.
    The pooled embedding, its normalisation and the heads (<1% of the work) stay fp32."""
    model.tower.half()
    model.tower.set_attn_implementation("eager")
    for parent in list(model.tower.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.LayerNorm):
                setattr(parent, name, Fp32LayerNorm(child))
    return model


def save_onnx(graph, path: Path, external_data_bytes: int = EXTERNAL_DATA_BYTES) -> list[Path]:
    """Save the graph, weights in one `.data` file beside it when they pass `external_data_bytes`."""
    import onnx

    weight_bytes = sum(len(t.raw_data) for t in graph.graph.initializer)
    if weight_bytes <= external_data_bytes:
        onnx.save_model(graph, str(path))
        return [path]
    data = path.with_name(path.name + ".data")
    onnx.save_model(graph, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name, size_threshold=1024)
    return [path, data]


def check_parity(
    reference: ReferenceModel, onnx_path: Path, heads: Sequence[str], neutral: dict[str, float], image_size: int, count: int, seed: int
) -> Parity:
    """ONNX Runtime vs the unfused PyTorch reference on a fixed image set (batch != export batch, so the
    dynamic batch axis is exercised too)."""
    import onnxruntime as ort

    pixels = parity_pixels(count, image_size, seed)
    want_scores, want_embedding = (t.numpy() for t in reference(torch.from_numpy(pixels)))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got_scores, got_embedding = session.run(["scores", "embedding"], {"pixels": pixels})
    return compare_outputs(want_scores, want_embedding, got_scores, got_embedding, heads, neutral)


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

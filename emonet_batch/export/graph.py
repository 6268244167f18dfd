"""The fused graph: the SigLIP tower and every head as one module, its fp16 variant, and its ONNX file.

pixels uint8 [N,S,S,3] -> x/255, (x-0.5)/0.5 -> SigLIP tower -> pooled embedding (L2-normalised when
recorded) -> all heads as a few batched matrix products -> scores float32 [N,H], embedding [N,D].
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..model.record import (
    GRAPH_INPUT,
    GRAPH_OUTPUTS,
    HEADS_INPUT,
    HEADS_ONLY,
    HEADS_ONNX,
    HEADS_OUTPUTS,
    METADATA_PREFIX,
    MODEL_ONNX,
    TOWER_ONNX,
)
from .checkpoint import Encoder, HeadSet
from .quantize import quantize_int8
from .reference import embed

#: Weights above this go to model.onnx.data: protobuf cannot hold a file over 2 GiB, and serialising
#: close to that limit fails on the graph's own overhead, so keep a wide margin.
EXTERNAL_DATA_BYTES = 3 * 1024**3 // 2


class BatchedHeads(nn.Module):
    """Every head as a few batched matrix products: the first head layer of every head is one [D, H*h0] matmul;
    each later layer is one batched matmul over the H heads. embedding [N, D] -> scores [N, H]."""

    def __init__(self, heads: HeadSet):
        super().__init__()
        linears = [head.linears for head in heads.modules]  # [H][layers]
        self.first = nn.Linear(heads.in_dim, sum(layer[0].out_features for layer in linears))
        with torch.no_grad():
            self.first.weight.copy_(torch.cat([layer[0].weight for layer in linears], dim=0))
            self.first.bias.copy_(torch.cat([layer[0].bias for layer in linears], dim=0))
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for depth in range(1, len(linears[0])):
            # [H, in, out] and [H, 1, out], so that [H, N, in] @ [H, in, out] + bias runs every head at once
            self.weights.append(
                nn.Parameter(torch.stack([layer[depth].weight.t() for layer in linears]), requires_grad=False)
            )
            self.biases.append(
                nn.Parameter(torch.stack([layer[depth].bias[None, :] for layer in linears]), requires_grad=False)
            )
        self.num_heads = len(linears)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.first(embedding))
        hidden = hidden.reshape(hidden.shape[0], self.num_heads, -1).transpose(0, 1)  # [H, N, h0]
        for depth, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            hidden = torch.matmul(hidden, weight) + bias
            if depth < len(self.weights) - 1:
                hidden = torch.relu(hidden)
        return hidden.squeeze(-1).transpose(0, 1)  # [N, H]


class FusedModel(nn.Module):
    """Tower + all heads (BatchedHeads): uint8 pixels -> (scores, embedding)."""

    def __init__(self, encoder: Encoder, heads: HeadSet, normalize: bool):
        super().__init__()
        self.tower = encoder.model
        self.normalize = normalize
        self.heads = BatchedHeads(heads)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = embed(self.tower, pixels, self.normalize)
        return self.heads(embedding), embedding


def write_onnx(
    model: nn.Module,
    out: Path,
    example: torch.Tensor,
    opset: int,
    metadata: dict[str, Any],
    names: tuple[str, tuple[str, ...]] = (GRAPH_INPUT, GRAPH_OUTPUTS),
) -> list[Path]:
    """Export to out/model.onnx. A full model's weights go to model.onnx.data, shared with its two halves
    (write_halves); a heads-only model keeps them inside (under the protobuf limit). `example` is an input of
    batch 2 (the batch axis is dynamic); `names` the graph's input and output names."""
    import onnx

    staging = out / ".export-staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    input_name, output_names = names
    try:
        batch = {0: "batch"}
        # The TorchScript exporter: it exports this model in well under a second for the tiny tower and
        # keeps our output names; the dynamo exporter (torch 2.13) collides an internal value with the
        # `embedding` output name and takes ~25x longer.
        with torch.no_grad(), warnings.catch_warnings():
            # tracing warns about Python-level branches in transformers' attention; they are shape-only
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter; see the comment above
            torch.onnx.export(
                model,
                (example,),
                str(staging / MODEL_ONNX),
                input_names=[input_name],
                output_names=list(output_names),
                dynamic_axes={name: batch for name in (input_name, *output_names)},
                opset_version=opset,
                dynamo=False,
            )
        source = staging / MODEL_ONNX
        if metadata["precision"] == "int8":
            source = quantize_int8(source, staging / "model.int8.onnx")
        graph = onnx.load(str(source))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    mark_producer(graph, "Empathic Insight Face (SigLIP2 tower + emotion heads), fused by emonet-batch")
    onnx.helper.set_model_props(graph, {METADATA_PREFIX + k: json.dumps(v) for k, v in metadata.items()})
    if metadata["kind"] == HEADS_ONLY:
        return save_onnx(graph, out / MODEL_ONNX)
    return save_onnx(graph, out / MODEL_ONNX, external_data_bytes=0) + write_halves(out)


def mark_producer(graph, description: str) -> None:
    graph.producer_name = "emonet-batch"
    graph.producer_version = __version__
    graph.doc_string = description


#: Each half of a full model's fused graph: its file, input and outputs.
HALVES = (
    (TOWER_ONNX, GRAPH_INPUT, (HEADS_INPUT,)),
    (HEADS_ONNX, HEADS_INPUT, HEADS_OUTPUTS),
)


def write_halves(out: Path) -> list[Path]:
    """tower.onnx and heads.onnx: the fused graph cut at the embedding, each half's weights read from the fused
    graph's model.onnx.data (nothing is copied). The CPU path runs the tower one image a call and the heads on
    fixed-size batches (job/infer.py); the fused graph cannot skip its heads, and a CPU reads the heads'
    weights from memory once per call."""
    import onnx

    fused = onnx.load(str(out / MODEL_ONNX), load_external_data=False)  # the weights stay where they are
    extractor = onnx.utils.Extractor(fused)
    files = []
    for name, input_name, output_names in HALVES:
        half = extractor.extract_model([input_name], list(output_names))
        mark_producer(half, f"Empathic Insight Face, {input_name} -> {', '.join(output_names)}, cut by emonet-batch")
        onnx.save_model(half, str(out / name))
        files.append(out / name)
    return files


def save_onnx(graph, path: Path, external_data_bytes: int = EXTERNAL_DATA_BYTES) -> list[Path]:
    """Save the graph, weights in one `.data` file beside it when they pass `external_data_bytes`."""
    import onnx

    weight_bytes = sum(len(t.raw_data) for t in graph.graph.initializer)
    if weight_bytes <= external_data_bytes:
        onnx.save_model(graph, str(path))
        return [path]
    data = path.with_name(path.name + ".data")
    onnx.save_model(
        graph,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=1024,
    )
    os.chmod(data, os.stat(path).st_mode)  # onnx creates it owner-only; readable like the graph beside it
    return [path, data]


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

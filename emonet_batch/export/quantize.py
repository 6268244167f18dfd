"""int8 quantisation of the fused graph for CPUs (ONNX Runtime's quantiser)."""

from __future__ import annotations

import logging
from pathlib import Path

#: How --precision int8 quantises (recorded in model.json). Dynamic quantisation: int8 weights, activations
#: quantised per batch from their own range, so no calibration data can be unrepresentative. Only matrix
#: products with a 2-d constant weight (the tower's linear layers and the heads' first layer: ~90% of the
#: work) are quantised; attention's activation x activation products stay fp32 (quantising them gained
#: nothing here). 7-bit weights (reduce_range) keep the u8 x s8 AVX2/AVX-512 kernels (VPMADDUBSW) from
#: saturating their 16-bit sums, which otherwise cost the synthetic Large tower an embedding cosine of 0.92;
#: per-channel scales then bring max |Δ score| to ~0.003.
INT8_QUANTIZATION = {
    "method": "onnxruntime dynamic",
    "ops": ["MatMul", "Gemm"],
    "constant_weights_only": True,
    "weights": "int8 per channel, 7-bit range",
    "activations": "uint8 per tensor, per batch",
}


def quantize_int8(source: Path, target: Path) -> Path:
    """The fp32 graph at `source`, its weight matrix products in int8 (see INT8_QUANTIZATION), at `target`."""
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
            source,
            target,
            op_types_to_quantize=INT8_QUANTIZATION["ops"],
            per_channel=True,
            reduce_range=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=batched,
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        root.setLevel(level)
    return target

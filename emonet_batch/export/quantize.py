"""int8 quantisation of the fused graph for CPUs (ONNX Runtime's quantiser)."""

from __future__ import annotations

import logging
from pathlib import Path

#: How --precision int8 quantises (recorded in model.json). Dynamic quantisation: int8 weights, activations
#: quantised per call from their own range, so no calibration data can be unrepresentative. Only the tower's
#: matrix products with a 2-d constant weight (its linear layers: ~90% of the work) are quantised; attention's
#: activation x activation products stay fp32 (quantising them gained nothing here), and so do the heads: they
#: run on batches, where a scale taken over the call would make a row's scores depend on the others. 7-bit
#: weights (reduce_range) keep the u8 x s8 AVX2/AVX-512 kernels (VPMADDUBSW) from saturating their 16-bit sums,
#: which otherwise cost the synthetic Large tower an embedding cosine of 0.92; per-channel scales then bring
#: max |Δ score| to ~0.003.
INT8_QUANTIZATION = {
    "method": "onnxruntime dynamic",
    "ops": ["MatMul", "Gemm"],
    "heads": "fp32",
    "constant_weights_only": True,
    "weights": "int8 per channel, 7-bit range",
    "activations": "uint8 per tensor, per call",
}


def quantize_int8(source: Path, target: Path) -> Path:
    """The fp32 graph at `source`, its weight matrix products in int8 (see INT8_QUANTIZATION), at `target`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ..model.record import HEADS_INPUT, HEADS_OUTPUTS

    graph = onnx.load(str(source), load_external_data=False)  # the graph only: the weights stay on disk
    heads = onnx.utils.Extractor(graph).extract_model([HEADS_INPUT], list(HEADS_OUTPUTS))
    # the quantiser turns each Gemm into a MatMul named `<name>_MatMul` before it matches the names to exclude
    excluded = [name for node in heads.graph.node for name in (node.name, node.name + "_MatMul")]
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
            nodes_to_exclude=excluded,
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        root.setLevel(level)
    return target

"""The probe graph `doctor` opens a session on: a convolution (cuDNN on a GPU) and a matrix product (cuBLAS) over
a tiny input, so that one run of it shows a provider's libraries load and its kernels run on this device.

The scoring install has no `onnx`, so the graph ships as a file (`job.accelerator.PROBE_GRAPH`), written by
`write_probe`; a test checks that the file is what this code writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..job.accelerator import PROBE_INPUT, PROBE_SHAPE

_CHANNELS = 4


def probe_graph() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    _, _, height, width = PROBE_SHAPE
    kernel = rng.standard_normal((_CHANNELS, PROBE_SHAPE[1], 3, 3)).astype(np.float32)
    matrix = rng.standard_normal((_CHANNELS * (height - 2) * (width - 2), 8)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", [PROBE_INPUT, "kernel"], ["features"]),
        helper.make_node("Flatten", ["features"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "matrix"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "emonet-batch-probe",
        [helper.make_tensor_value_info(PROBE_INPUT, TensorProto.FLOAT, list(PROBE_SHAPE))],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [PROBE_SHAPE[0], 8])],
        [numpy_helper.from_array(kernel, "kernel"), numpy_helper.from_array(matrix, "matrix")],
    )
    # fixed versions and producer, so that the file is the same whatever onnx writes it
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="emonet-batch")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_probe(path: Path) -> None:
    path.write_bytes(probe_graph().SerializeToString())

"""A PyTorch-only fast GPU path for benchmarks: the reference model under autocast (bf16 or fp16 matrix products,
LayerNorm and softmax kept in fp32 by autocast's own op lists) replayed from a CUDA graph over fixed buffers.

It needs nothing beyond PyTorch and transformers, so a GPU machine whose ONNX Runtime has no GPU provider (or
no TensorRT) still gets a measured low-precision baseline to hold the ONNX paths against. One graph is captured
for one batch size; a shorter batch is padded into the fixed input buffer. On a CPU (dry runs) it runs eagerly
under CPU autocast.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: Forward passes before capture: cuDNN/cuBLAS pick their kernels and allocate their workspaces outside the graph.
WARMUP_PASSES = 3


def graphed_runner(
    model: nn.Module, precision: str, batch_size: int, size: int, device: str = "cuda"
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """uint8 pixels [N <= batch_size, S, S, 3] -> (scores, embedding) as numpy float32."""
    model = model.to(device)
    pixels_in = torch.zeros((batch_size, size, size, 3), dtype=torch.uint8, device=device)

    def forward() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=device, dtype=DTYPES[precision]):
            return model(pixels_in)

    replay = _capture(forward, device)

    def run(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        count = len(pixels)
        if count > batch_size:
            raise ValueError(f"a batch of {count} images does not fit the graph's {batch_size}")
        pixels_in[:count].copy_(torch.from_numpy(pixels))
        scores, embedding = replay()
        return scores[:count].float().cpu().numpy(), embedding[:count].float().cpu().numpy()

    return run


def _capture(forward: Callable[[], tuple[torch.Tensor, torch.Tensor]], device: str):
    """A function that runs `forward` on the current buffers: a CUDA graph replay, or `forward` itself on a CPU."""
    if device != "cuda":
        return forward
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as CUDA graph capture requires
        for _ in range(WARMUP_PASSES):
            forward()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = forward()

    def replay() -> tuple[torch.Tensor, torch.Tensor]:
        graph.replay()
        return outputs

    return replay

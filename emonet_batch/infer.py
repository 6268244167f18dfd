"""ONNX Runtime inference over an exported model: uint8 pixels in, raw head scores and embeddings out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import ModelInfo


@dataclass(frozen=True)
class SessionOptions:
    """ONNX Runtime session settings. threads=0 lets ORT use every core it sees."""

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = 0


class OnnxScorer:
    """One ORT session; `run` maps uint8 [N, S, S, 3] to (scores [N, H], embedding [N, D]) float32."""

    def __init__(self, info: ModelInfo, options: SessionOptions = SessionOptions()):
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = options.intra_op_threads
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.info = info
        self.session = ort.InferenceSession(str(info.onnx_path), session_options, providers=list(options.providers))

    def run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        size = self.info.image_size
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != (size, size, 3):
            raise ValueError(f"pixels must be uint8 [N, {size}, {size}, 3], got {pixels.dtype} {pixels.shape}")
        scores, embedding = self.session.run(["scores", "embedding"], {"pixels": np.ascontiguousarray(pixels)})
        return scores, embedding

    @property
    def active_providers(self) -> list[str]:
        return self.session.get_providers()

"""ONNX Runtime inference over an exported model: uint8 pixels in, raw head scores and embeddings out."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import numpy as np

from .model import ModelInfo
from .read import SAMPLE


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


class InferStage:
    """Ray actor body: one ORT session per actor, scoring the `sample` rows of each batch.

    Other rows pass through with NaN scores. With GPUs requested, a session whose CUDA provider did not
    load is an error: ORT silently falls back to CPU otherwise, and a GPU job would crawl unnoticed."""

    def __init__(self, model_dir: str, options: SessionOptions, with_embedding: bool, require_cuda: bool):
        from .model import load_model_info

        self.scorer = OnnxScorer(load_model_info(model_dir), options)
        self.with_embedding = with_embedding
        # which actor scored a row: the driver sums images per worker into the manifest
        self.worker = f"{socket.gethostname()}:{os.getpid()}:gpu={os.environ.get('CUDA_VISIBLE_DEVICES', '-')}"
        if require_cuda and "CUDAExecutionProvider" not in self.scorer.active_providers:
            raise RuntimeError(
                "GPUs were requested but ONNX Runtime's CUDA provider is not active "
                f"(active: {', '.join(self.scorer.active_providers)}); install onnxruntime-gpu with a matching CUDA"
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pixels = batch.pop("pixels")
        count = len(pixels)
        info = self.scorer.info
        scores = np.full((count, len(info.heads)), np.nan, dtype=np.float32)
        embedding = np.full((count, info.embedding_dim), np.nan, dtype=np.float32) if self.with_embedding else None
        rows = np.flatnonzero(batch["kind"] == SAMPLE)
        if rows.size:
            got_scores, got_embedding = self.scorer.run(pixels[rows])
            scores[rows] = got_scores
            if embedding is not None:
                embedding[rows] = got_embedding
        batch["scores"] = scores
        batch["worker"] = np.full(count, self.worker, dtype=object)
        if embedding is not None:
            batch["embedding"] = embedding
        return batch

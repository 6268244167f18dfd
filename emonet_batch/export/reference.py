"""The unfused PyTorch reference: the transformers tower plus each released head as its own module.

Export parity is measured against this, so it deliberately shares nothing with the fused graph but
the tower and the pixel normalisation (which the fused graph must reproduce exactly).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import HeadSet, load_encoder, load_heads


def normalize_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [N, S, S, 3] -> float [N, 3, S, S] with x/255 then (x-0.5)/0.5, as SigLIP was trained."""
    x = pixels.permute(0, 3, 1, 2).to(torch.float32) / 255.0
    return (x - 0.5) / 0.5


def embed(tower: nn.Module, pixels: torch.Tensor, normalize: bool) -> torch.Tensor:
    """The pooled (attention-pool head) embedding, L2-normalised when the model records it."""
    # .float(): an fp16 tower's embedding is normalised and fed to the heads in fp32
    pooled = tower(pixel_values=normalize_pixels(pixels)).pooler_output.float()
    return F.normalize(pooled, dim=-1) if normalize else pooled


class ReferenceModel(nn.Module):
    def __init__(self, tower: nn.Module, heads: HeadSet, normalize: bool):
        super().__init__()
        self.tower = tower
        self.heads = nn.ModuleList(heads.modules)
        self.normalize = normalize

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = embed(self.tower, pixels, self.normalize)
        scores = torch.cat([head(embedding) for head in self.heads], dim=1)
        return scores, embedding


def reference_model(checkpoint: Path, heads: tuple[str, ...], normalize: bool) -> ReferenceModel:
    """The reference over `checkpoint` (encoder/ and heads/ in the released layout), in eval mode."""
    return ReferenceModel(
        load_encoder(checkpoint / "encoder").model, load_heads(checkpoint / "heads", heads), normalize
    ).eval()


def reference_runner(checkpoint: Path, heads: tuple[str, ...], normalize: bool, device: str = "cpu"):
    """PyTorch eager fp32 over `checkpoint` as a benchmark path: uint8 pixels [N, S, S, 3] -> (scores,
    embedding) as numpy float32."""
    model = reference_model(checkpoint, heads, normalize).to(device)

    def run(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            scores, embedding = model(torch.from_numpy(pixels).to(device))
        return scores.float().cpu().numpy(), embedding.float().cpu().numpy()

    return run

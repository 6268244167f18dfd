"""Random-weight checkpoints in exactly the released layout, for tests and benchmarks (no hub here).

`tiny` is a few-MB tower for fast tests; `null` takes 384 px images with next to no compute (the pipeline's
own cost); `wide` gives the real 1152-d embedding with next to no tower (heads-only models for rescore
benchmarks); `full` has the exact so400m-patch16-384 shape. Both are written
with transformers' own `save_pretrained` and `torch.save`, then loaded by the same code as real releases.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..model.postprocess import packaged_neutral_means
from ..model.taxonomy import DIMENSIONS, EMOTIONS, column_name, head_file_name
from .checkpoint import HEAD_SIZES, EmotionHead, quiet_transformers

TOWERS: dict[str, dict[str, int]] = {
    "tiny": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=64, patch_size=8
    ),
    # the real input size with next to no compute: what the job itself costs per image (scripts/bench.py)
    "null": dict(
        hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=1, image_size=384, patch_size=32
    ),
    # the real embedding width (1152) with next to no tower: heads-only exports for rescore benchmarks
    "wide": dict(
        hidden_size=1152,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=16,
        image_size=32,
        patch_size=16,
    ),
    "full": dict(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        image_size=384,
        patch_size=16,
    ),
}
#: Scales the last layer of synthetic heads so scores spread around the neutral mean roughly as real
#: ones do, instead of all sitting within a few hundredths of it (which makes every softmax uniform).
_OUTPUT_GAIN = 20.0


def write_synthetic_checkpoint(
    root: Path, tower: str, head_size: str, seed: int, full_model: bool = False
) -> tuple[Path, Path]:
    """Write `root/encoder/` and `root/heads/model_<stem>_best.pth` (all 44 heads); returns both dirs.

    full_model saves the tower inside a full SiglipModel (text tower included), the other released form."""
    if tower not in TOWERS:
        raise ValueError(f"unknown synthetic tower {tower!r}; choose from {', '.join(TOWERS)}")
    if head_size not in HEAD_SIZES:
        raise ValueError(f"unknown head size {head_size!r}; choose from {', '.join(HEAD_SIZES)}")
    torch.manual_seed(seed)
    encoder_dir, heads_dir = root / "encoder", root / "heads"
    write_encoder(encoder_dir, TOWERS[tower], full_model)
    write_heads(heads_dir, TOWERS[tower]["hidden_size"], head_size)
    return encoder_dir, heads_dir


def write_encoder(directory: Path, shape: dict[str, int], full_model: bool) -> None:
    from transformers import SiglipConfig, SiglipModel, SiglipVisionConfig, SiglipVisionModel
    from transformers.models.siglip import SiglipImageProcessorPil

    if full_model:
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
        model = SiglipModel(SiglipConfig(vision_config=shape, text_config=text))
    else:
        model = SiglipVisionModel(SiglipVisionConfig(**shape))
    with quiet_transformers():
        model.save_pretrained(directory)
    size = shape["image_size"]
    # the released SigLIP2 processor config says resample=2 (bilinear); write the same
    processor = SiglipImageProcessorPil(size={"height": size, "width": size}, resample=2)
    processor.save_pretrained(directory)


def write_heads(directory: Path, in_dim: int, head_size: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    neutral = packaged_neutral_means()
    for label in EMOTIONS + DIMENSIONS:
        head = EmotionHead(in_dim, HEAD_SIZES[head_size])
        last = head.linears[-1]
        with torch.no_grad():
            last.weight.mul_(_OUTPUT_GAIN)
            last.bias.fill_(neutral[column_name(label)])
        torch.save(head.state_dict(), directory / head_file_name(label))

"""`emonet-batch demo`: export a tiny synthetic model (once) and score generated sample faces.

The scoring here is in-process; it is the smallest end-to-end path from image bytes to labels:
decode -> ONNX Runtime -> derive (centered scores, softmax) -> top emotion.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .errors import ModelError
from .infer import OnnxScorer
from .model import ModelInfo, load_model_info
from .postprocess import derive, top_emotion, top_k
from .preprocess import decode_image
from .samples import sample_images
from .summary import format_table
from .taxonomy import label_of


def demo_model(model_dir: Path) -> ModelInfo:
    """The demo's tiny synthetic model: reused when already exported and intact, exported otherwise."""
    try:
        return load_model_info(model_dir)
    except ModelError:
        from .export import ExportConfig, export_model

        export_model(ExportConfig(out=model_dir, synthetic="tiny", head_size="large", overwrite=True))
        return load_model_info(model_dir)


def run_demo(out: Path, count: int) -> str:
    started = time.perf_counter()
    info = demo_model(out / "model")
    samples = sample_images(count)
    sample_dir = out / "samples"
    sample_dir.mkdir(parents=True, exist_ok=True)
    for name, data in samples:
        suffix = "png" if data.startswith(b"\x89PNG") else "jpg"
        (sample_dir / f"{name}.{suffix}").write_bytes(data)
    pixels = np.stack([decode_image(data, info.image_size, info.resize_filter) for _, data in samples])
    scores, _ = OnnxScorer(info).run(pixels)
    derived = derive(scores, info.heads, info.neutral_means)
    labels, probs = top_emotion(derived["softmax"], info.heads)
    runners_up = top_k(derived["softmax"], info.heads, k=3)
    valence = info.heads.index("valence") if "valence" in info.heads else None
    rows = [
        (
            name, label, f"{prob:.3f}",
            f"{derived['centered'][i, valence]:+.2f}" if valence is not None else "-",
            ", ".join(label_of(column) for column, _ in runners_up[i][1:]),
        )
        for i, ((name, _), label, prob) in enumerate(zip(samples, labels, probs))
    ]  # fmt: skip
    table = format_table(("image", "top emotion", "p", "valence", "next"), rows)
    seconds = time.perf_counter() - started
    return (
        f"{table}\n\nscored {len(samples)} sample images from {sample_dir} with the synthetic model in {out / 'model'} "
        f"({len(info.heads)} heads, {info.image_size} px) in {seconds:.1f} s.\n"
        "The model has random weights: the labels show the pipeline works, not what the faces feel."
    )

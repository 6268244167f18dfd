"""Decode stage: sample rows' image bytes -> uint8 pixels at the model size; failures -> error rows.

Runs as Ray CPU tasks over batches (numpy format). Rows that are not samples pass through untouched.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .preprocess import ImageDecodeError, decode_image
from .read import ERROR, SAMPLE


def decode_batch(batch: dict[str, np.ndarray], size: int, resize_filter: str, max_pixels: int, fast: bool) -> dict[str, Any]:
    """Adds `pixels` [N, size, size, 3] uint8 (zeros where there is no image) and drops `image`."""
    count = len(batch["kind"])
    pixels = np.zeros((count, size, size, 3), dtype=np.uint8)
    kind = batch["kind"].astype(object)
    stage, error_type, message = (batch[c].astype(object) for c in ("stage", "error_type", "message"))
    for i in np.flatnonzero(kind == SAMPLE):
        try:
            pixels[i] = decode_image(batch["image"][i], size, resize_filter, max_pixels, fast)
        except ImageDecodeError as exc:
            kind[i], stage[i], error_type[i], message[i] = ERROR, "decode", exc.kind, str(exc)
    out = {name: column for name, column in batch.items() if name != "image"}
    out.update(kind=kind, stage=stage, error_type=error_type, message=message, pixels=pixels)
    return out

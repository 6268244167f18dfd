"""Model-only throughput: ONNX Runtime (the exported graph) vs PyTorch eager (transformers tower + the
separate heads) on the same weights, measured in one run, with the accuracy of ORT against PyTorch.

    python benchmarks/model_speed.py MODEL_DIR [--batch 4] [--iters 3]

MODEL_DIR is an export; the PyTorch side loads MODEL_DIR/checkpoint (what --synthetic writes) unless
--encoder/--heads point elsewhere. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from emonet_batch.checkpoint import load_encoder, load_heads
from emonet_batch.export import compare_outputs, parity_pixels
from emonet_batch.infer import OnnxScorer
from emonet_batch.model import load_model_info
from emonet_batch.reference import ReferenceModel


def images_per_second(run, pixels: np.ndarray, iters: int) -> float:
    run(pixels)  # warm-up: allocations, kernel selection
    started = time.perf_counter()
    for _ in range(iters):
        run(pixels)
    return iters * len(pixels) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--encoder", type=Path)
    parser.add_argument("--heads", type=Path)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args()

    info = load_model_info(args.model_dir)
    encoder = load_encoder(args.encoder or args.model_dir / "checkpoint" / "encoder")
    heads = load_heads(args.heads or args.model_dir / "checkpoint" / "heads", info.heads)
    reference = ReferenceModel(encoder.model, heads, info.normalize).eval()
    scorer = OnnxScorer(info)
    pixels = parity_pixels(args.batch, info.image_size, seed=1)

    with torch.inference_mode():
        torch_ips = images_per_second(lambda x: reference(torch.from_numpy(x)), pixels, args.iters)
        want = [t.numpy() for t in reference(torch.from_numpy(pixels))]
    ort_ips = images_per_second(scorer.run, pixels, args.iters)
    got = scorer.run(pixels)
    accuracy = compare_outputs(*want, *got, info.heads, info.neutral_means)
    print(json.dumps({
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        "model": {"head_size": info.head_size, "image_size": info.image_size, "precision": info.precision},
        "batch": args.batch, "iters": args.iters, "torch_threads": torch.get_num_threads(),
        "images_per_s": {"pytorch_eager_fp32": round(torch_ips, 3), "onnxruntime": round(ort_ips, 3)},
        "ort_vs_pytorch": round(ort_ips / torch_ips, 3),
        "accuracy_vs_pytorch": accuracy.as_dict(),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()

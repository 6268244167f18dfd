"""GPU benchmark: every GPU inference path against PyTorch eager fp32 on the same GPU, in one run.

    python scripts/gpu_bench.py [--out FILE] [--images 512] [--batch-size 64]

Exports the full synthetic Large model at fp32 and fp16 into --models (once), then on one image set:
PyTorch eager fp32 on CUDA (the reference), ONNX Runtime CUDA fp32, CUDA fp16 (LayerNorm and softmax in
fp32), and when the TensorRT provider loads TensorRT fp16 (the fp16 export) and bf16 (the fp32 export),
engines built into --trt-cache on first use (`*_first_run_s` includes the build); every path's images/s and
accuracy against the reference, and which providers were really active. One CPU core's decode rate says how
many cores one GPU needs. Run by scripts/gpu_check.sh; prints the JSON and writes it to --out (default
benchmarks/results/<date>-<device>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from pathlib import Path

from emonet_batch.devtools.benchmark import cpu_description, measure, ort_scorer, path_figures
from emonet_batch.errors import first_line
from emonet_batch.export.reference import reference_runner
from emonet_batch.job.infer import SessionOptions
from emonet_batch.model.accuracy import parity_pixels
from emonet_batch.model.record import load_model_info

ROOT = Path(__file__).resolve().parent.parent


def export_once(directory: Path, precision: str, checkpoint: Path | None = None) -> tuple[Path, float]:
    """The full synthetic Large model at `precision` (from `checkpoint`, else a fresh synthetic one), exported
    unless already there; (dir, seconds spent). Parity on 2 images only: the export checks it with ONNX Runtime
    on the CPU, slow for fp16, and the benchmark measures every path's accuracy on the GPU anyway."""
    from emonet_batch.errors import EmonetError
    from emonet_batch.export import ExportConfig, export_model

    started = time.perf_counter()
    try:
        load_model_info(directory)
    except EmonetError:
        source = (
            {"encoder": str(checkpoint / "encoder"), "heads": str(checkpoint / "heads")}
            if checkpoint
            else {"synthetic": "full"}
        )
        export_model(
            ExportConfig(
                out=directory, **source, head_size="large", precision=precision, parity_images=2, overwrite=True
            )
        )
    return directory, time.perf_counter() - started


def decode_rate(size: int, count: int = 64) -> float:
    """One core's images/s through the job's decode path on 1024 px JPEG faces."""
    from emonet_batch.devtools.samples import encode, face_image
    from emonet_batch.job.decode import decode_image

    images = [encode(face_image(i, size=1024), "JPEG", quality=90) for i in range(count)]
    started = time.perf_counter()
    for data in images:
        decode_image(data, size, "bilinear", fast=True)
    return count / (time.perf_counter() - started)


def gpu_paths(fp32: Path, fp16: Path, batch_size: int, trt_cache: Path) -> list[tuple[str, Path, SessionOptions]]:
    cuda = SessionOptions(device="cuda", intra_op_threads=1)

    def trt(precision: str) -> SessionOptions:
        return SessionOptions(
            device="tensorrt",
            intra_op_threads=1,
            trt_precision=precision,
            max_batch=batch_size,
            trt_cache_dir=str(trt_cache),
        )

    return [
        ("ort_cuda_fp32", fp32, cuda),
        ("ort_cuda_fp16", fp16, cuda),
        ("ort_trt_fp16", fp16, trt("fp16")),  # the fp16 export: LayerNorm and softmax fp32 between casts
        ("ort_trt_bf16", fp32, trt("bf16")),  # the fp32 export: TensorRT picks bf16 kernels
    ]


def main() -> None:
    import onnxruntime as ort
    import torch

    parser = argparse.ArgumentParser(description="Benchmark the GPU inference paths (prints and writes JSON).")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--models", type=Path, default=ROOT / "benchmarks" / "models")
    parser.add_argument("--trt-cache", type=Path, default=ROOT / "benchmarks" / "models" / "trt-cache")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_bench: no CUDA device visible to PyTorch")
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA and cuDNN from the nvidia-* wheels PyTorch uses, so both share one copy

    fp32, fp32_s = export_once(args.models / "full-large-fp32", "fp32")
    fp16, fp16_s = export_once(args.models / "full-large-fp16", "fp16", checkpoint=fp32 / "checkpoint")  # same weights
    info = load_model_info(fp32)
    pixels = parity_pixels(args.images, info.image_size, seed=1)
    reference = measure(
        reference_runner(fp32 / "checkpoint", info.heads, info.normalize, device="cuda"), pixels, args.batch_size
    )
    figures = path_figures("torch_cuda_fp32", reference, None, info)
    active, skipped = {}, {}
    for name, directory, options in gpu_paths(fp32, fp16, args.batch_size, args.trt_cache):
        if options.provider not in ort.get_available_providers():
            skipped[name] = f"{options.provider} is not in this ONNX Runtime build"
            continue
        started = time.perf_counter()
        try:
            scorer = ort_scorer(directory, options)
            scorer.run(pixels[: args.batch_size])  # TensorRT builds (or loads) its engine on the first run
        except Exception as exc:  # a path that cannot run is reported, and the others still measured
            skipped[name] = f"{type(exc).__name__}: {first_line(exc)}"
            continue
        figures[f"{name}_first_run_s"] = round(time.perf_counter() - started, 1)
        active[name] = scorer.active_providers
        figures.update(path_figures(name, measure(scorer.run, pixels, args.batch_size), reference, info))
        figures[f"{name}_speedup_vs_torch_fp32"] = round(
            figures[f"{name}_images_per_s"] / figures["torch_cuda_fp32_images_per_s"], 3
        )
        del scorer

    device = torch.cuda.get_device_name(0)
    result = {
        "device": device,
        "host": f"{os.cpu_count()} {platform.machine()} CPUs ({cpu_description()})",
        "versions": {"onnxruntime": ort.__version__, "torch": torch.__version__, "cuda": torch.version.cuda},
        "model": f"synthetic full Large, {info.image_size} px",
        "images": args.images,
        "batch_size": args.batch_size,
        "export_s": {"fp32": round(fp32_s, 1), "fp16": round(fp16_s, 1)},
        **figures,
        "decode_images_per_s_one_core": round(decode_rate(info.image_size), 1),
        "active_providers": active,
        "not_measured": skipped,
    }
    text = json.dumps(result, indent=2)
    print(text)
    out = args.out or ROOT / "benchmarks" / "results" / f"{time.strftime('%Y-%m-%d')}-{device_slug(device)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


def device_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


if __name__ == "__main__":
    main()

"""ONNX Runtime CUDA's host CPU while it waits for the GPU: CUDA's default wait (a spin, with fewer contexts than
CPUs) against blocking synchronisation (cudaDeviceScheduleBlockingSync, set before ONNX Runtime makes its context),
each measured in a process of its own, in turns.

    python scripts/gpu_sync.py MODEL_DIR [--images 512] [--batch-size 128] [--rounds 2] [--out FILE]

For each way of waiting: images/s and the process's CPU ms per image over the timed batches (the inference
actor's CPU per image followed the GPU's time per image in the job's first GPU run). Prints the JSON and writes it
to --out when given. Run by scripts/gpu_check.sh after gpu_bench.py has made the fp16 export.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: cudaDeviceScheduleBlockingSync: the host thread sleeps on a synchronisation primitive until the GPU is done.
BLOCKING_SYNC = 0x04
WAITS = ("default", "blocking")


def set_blocking_sync() -> None:
    """Make this process's CUDA contexts block, not spin, while the host waits (before any context exists)."""
    from emonet_batch.job.accelerator import load_gpu_libraries, runtime_cuda_version

    version = runtime_cuda_version()
    if version is None:
        raise SystemExit("gpu_sync: the installed ONNX Runtime is not a CUDA build")
    load_gpu_libraries()  # the CUDA runtime from the pip wheels, the one ONNX Runtime's provider uses
    cudart = ctypes.CDLL(f"libcudart.so.{version.split('.')[0]}")
    code = cudart.cudaSetDeviceFlags(BLOCKING_SYNC)
    if code != 0:
        raise SystemExit(f"gpu_sync: cudaSetDeviceFlags returned CUDA error {code}")


def measure_once(model: Path, wait: str, images: int, batch_size: int) -> dict:
    """One process's figures: the session made after choosing how to wait, one warm-up batch, then every batch."""
    from emonet_batch.devtools.benchmark import measure, ort_scorer
    from emonet_batch.job.infer import SessionOptions
    from emonet_batch.model.accuracy import parity_pixels
    from emonet_batch.model.record import load_model_info

    if wait == "blocking":
        set_blocking_sync()
    scorer = ort_scorer(model, SessionOptions(device="cuda", intra_op_threads=1))
    pixels = parity_pixels(images, load_model_info(model).image_size, seed=1)
    scorer.run(pixels[:batch_size])  # the session's lazy set-up, outside the CPU counted below
    cpu = time.process_time()
    measured = measure(scorer.run, pixels, batch_size)  # a warm-up batch of its own, then every batch
    cpu_per_image = (time.process_time() - cpu) / (images + min(batch_size, images))
    return {"images_per_s": round(measured.images_per_s, 1), "cpu_ms_per_image": round(cpu_per_image * 1000, 3)}


def in_a_process(model: Path, wait: str, images: int, batch_size: int) -> dict:
    options = ["--wait", wait, "--images", str(images), "--batch-size", str(batch_size)]
    done = subprocess.run([sys.executable, __file__, str(model), *options], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description="CUDA's default wait against blocking synchronisation.")
    parser.add_argument("model", type=Path)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--wait", choices=WAITS, help="measure in this process only (what each turn runs)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.wait:
        print(json.dumps(measure_once(args.model, args.wait, args.images, args.batch_size)))
        return
    turns = {wait: [] for wait in WAITS}
    for _ in range(args.rounds):
        for wait in WAITS:
            turns[wait].append(in_a_process(args.model, wait, args.images, args.batch_size))
    result = {"model": str(args.model), "images": args.images, "batch_size": args.batch_size, "turns": turns}
    for wait, figures in turns.items():
        measured = [f for f in figures if "error" not in f]
        if measured:
            result[wait] = {name: statistics.median(f[name] for f in measured) for name in measured[0]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

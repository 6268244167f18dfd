"""Benchmark of the scoring job on this machine's CPUs; prints one JSON object.

    python scripts/bench.py [--model tiny|null|full|heads] [--images N] [--batch-size B]

Measured in one run, on the same weights, images and cores:
- decode: the job's decode path vs plain PIL open/convert/resize on 1024x1024 JPEG faces (one core, best of
  5 passes each, taking turns), and the mean grey-level difference between the two (`decode_speedup_vs_pil`,
  `decode_mean_abs_diff_grey_levels`);
- model-only, each path over the same decoded faces after one warm-up batch: PyTorch eager fp32 (transformers
  tower + the separate heads: the reference), ONNX Runtime fp32, and the CPU fast path (ONNX Runtime int8,
  `export --precision int8`); every path's images/s, and its max |Δ score|, minimum embedding cosine and
  top-emotion agreement against the reference;
- e2e_images_per_s: the whole `score` job with the fast-path model on shards of those JPEGs (Ray already
  started; the wall time includes planning, actor start-up and the model's load);
- pipeline_efficiency: e2e / the fast path's model-only images/s;
- peak_rss_mb: the peak resident memory of this process and its children (the Ray workers);
- latency_8_images_s, startup_8_images_s (tiny model only): `emonet-batch score` on one shard of 8 images with
  `--no-stats` (a fresh process and Ray runtime each time, median of 5): wall seconds from the command to the
  prompt, and from the run's start to its first scored batch;
- ray_data_floor_first_batch_s, startup_over_ray_floor_s (tiny model only): the same start-up for Ray Data alone
  (emonet_batch/devtools/ray_floor.py: our runtime settings, one read task and one actor, nothing of ours), taking
  turns with those runs, and the median of what `score` takes beyond it.

`--model heads` measures `rescore` (see rescore_figures): the 44 Small and Large heads over generated 1152-d
embeddings stored as a scored output, end to end through the job, against the heads alone timed before and after
the run (`whole_run_ratio`), with the driver's CPU per row (the job's own collect and commit, and Ray Data's
iteration in the driver) and the bytes per row that reach the driver; then Ray Data's own floor for the same plan
(devtools/ray_floor.py: a shard's rows a read task in the model's batches, the heads on a fixed batch in the same
actors, nothing read or written) against the heads alone timed before and after it (`ray_data_floor_ratio`), and
the whole run against that floor (`whole_run_over_ray_data_floor`).

`--model null` measures the job's own cost instead (see pipeline_figures): a model of the real input size
(384 px) with next to no compute, so what remains is reading, decoding, moving 442 KB an image through Ray,
batching, the inference call, collecting and committing. Its JSON holds the ideal
cores / (1/decode_per_core + 1/model_only), the job's rate after its first scored batch
(`pipeline_ceiling_images_per_s`) and their ratio (`pipeline_ceiling_ratio`), the whole run's rate and ratio,
the start-up seconds, each stage's CPU milliseconds per image (from the run's manifest) and Ray's share.

The synthetic models are exported once into benchmarks/models/ (tiny: seconds; full: ~4 minutes each).
Run time on 2 cores: tiny ~1 minute; heads ~10 minutes; full ~12 minutes (the fp32 paths run ~0.2 images/s).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

from emonet_batch.devtools.benchmark import (
    best_rates,
    cpu_description,
    embedding_output,
    measure,
    ort_scorer,
    path_figures,
    synthetic_model,
    unit_embeddings,
)
from emonet_batch.devtools.ray_floor import heads_floor_rate
from emonet_batch.devtools.samples import demo_metadata, encode, face_image
from emonet_batch.devtools.shards import write_shards
from emonet_batch.edge.runtime import ensure_ray
from emonet_batch.export.reference import reference_runner
from emonet_batch.job.decode import RESIZE_FILTERS, decode_image
from emonet_batch.job.infer import SessionOptions
from emonet_batch.model.record import load_model_info
from emonet_batch.run.config import rescore_config, score_config
from emonet_batch.run.score import run_score

ROOT = Path(__file__).resolve().parent.parent
SOURCE_SIZE = 1024


def exported_model(kind: str, precision: str, head_size: str = "large", heads_only: bool = False) -> Path:
    return synthetic_model(ROOT / "benchmarks" / "models", kind, precision, head_size, heads_only)


def jpegs(count: int) -> list[bytes]:
    return [encode(face_image(i, size=SOURCE_SIZE), "JPEG", quality=90) for i in range(count)]


def pil_reference(data: bytes, size: int, resize_filter: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((size, size), RESIZE_FILTERS[resize_filter]))


def decode_figures(images: list[bytes], size: int, resize_filter: str) -> dict:
    rates = best_rates(
        {
            "ours": lambda d: decode_image(d, size, resize_filter, fast=True),
            "pil": lambda d: pil_reference(d, size, resize_filter),
        },
        images,
    )
    diff = np.mean(
        [
            np.abs(
                decode_image(d, size, resize_filter, fast=True).astype(int) - pil_reference(d, size, resize_filter)
            ).mean()
            for d in images
        ]
    )
    return {
        "decode_images_per_s": round(rates["ours"], 2),
        "pil_images_per_s": round(rates["pil"], 2),
        "decode_speedup_vs_pil": round(rates["ours"] / rates["pil"], 3),
        "decode_mean_abs_diff_grey_levels": round(float(diff), 3),
    }


def model_figures(fp32_dir: Path, fast_dir: Path, pixels: np.ndarray, batch_size: int) -> tuple[dict, float]:
    """Every path on the same pixels, in one run; returns the figures and the fast path's images/s."""
    info = load_model_info(fp32_dir)
    # the job's session settings: every core of this machine for the one CPU actor
    options = SessionOptions(intra_op_threads=os.cpu_count() or 1)
    reference = measure(reference_runner(fp32_dir / "checkpoint", info.heads, info.normalize), pixels, batch_size)
    figures = path_figures("torch_fp32", reference, None, info)
    for name, directory in (("ort_fp32", fp32_dir), ("cpu_fast", fast_dir)):
        scorer = ort_scorer(directory, options)
        figures.update(path_figures(name, measure(scorer.run, pixels, batch_size), reference, info))
    fast = figures["cpu_fast_images_per_s"]
    figures["cpu_fast_speedup_vs_torch_fp32"] = round(fast / figures["torch_fp32_images_per_s"], 3)
    figures["cpu_fast_speedup_vs_ort_fp32"] = round(fast / figures["ort_fp32_images_per_s"], 3)
    figures["ort_fp32_speedup_vs_torch_fp32"] = round(
        figures["ort_fp32_images_per_s"] / figures["torch_fp32_images_per_s"], 3
    )
    return figures, fast


def latency(model_dir: Path, images: list[bytes], runs: int = 5) -> dict[str, float]:
    """The console command on one shard of 8 images, `--no-stats`, each time a fresh process and Ray runtime:
    median wall seconds from the command to the prompt, and median seconds from the run's start to its first
    scored batch (the manifest's `startup_s`). Each run takes turns with Ray Data's own floor (devtools/ray_floor:
    the same runtime, the same plan shape, nothing of ours), so `startup_over_ray_floor_s` is what our code adds,
    measured in the same minutes (this machine's speed drifts by 10-20% over an hour)."""
    with tempfile.TemporaryDirectory() as work:
        shards = write_shards(((f"img-{i}", {"jpg": d}) for i, d in enumerate(images[:8])), Path(work), 8)
        walls, startups, floors = [], [], []
        for run in range(runs):
            output = Path(work) / f"out{run}"
            command = [sys.executable, "-m", "emonet_batch", "score", str(shards[0]), "--model", str(model_dir)]
            command += ["--output", str(output), "--no-stats", "--progress", "off"]
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=without_ray_address())
            walls.append(time.perf_counter() - started)
            startups.append(json.loads((output / "manifest.json").read_text())["figures"]["startup_s"])
            floor = subprocess.run(
                [sys.executable, "-m", "emonet_batch.devtools.ray_floor"],
                check=True,
                capture_output=True,
                text=True,
                env=without_ray_address(),
            )
            floors.append(json.loads(floor.stdout.splitlines()[-1])["first_batch_s"])
    return {
        "latency_8_images_s": round(statistics.median(walls), 2),
        "startup_8_images_s": round(statistics.median(startups), 2),
        "ray_data_floor_first_batch_s": round(statistics.median(floors), 2),
        "startup_over_ray_floor_s": round(statistics.median(s - f for s, f in zip(startups, floors)), 2),
    }


def without_ray_address() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


def job_run(samples, samples_per_shard: int, model_dir: Path, batch_size: int, measured=None, **options):
    """The whole `score` job (stats off) on shards of `samples`, Ray started first; `measured`, a context manager,
    wraps the run alone."""
    with tempfile.TemporaryDirectory() as work:
        shards = write_shards(samples, Path(work) / "shards", samples_per_shard)
        ensure_ray()
        config = score_config(
            tuple(map(str, shards)),
            str(Path(work) / "out"),
            str(model_dir),
            batch_size=batch_size,
            progress="off",
            stats=False,
            **options,
        )
        with measured or contextlib.nullcontext():
            return run_score(config)


class ProcessTreeCPU:
    """CPU seconds (user + system) of this process and its descendants (the Ray runtime it started) over a block."""

    def __enter__(self):
        self.started = self._total()
        return self

    def __exit__(self, *exc):
        self.seconds = self._total() - self.started

    @staticmethod
    def _total() -> float:
        me = psutil.Process()
        total = 0.0
        for process in [me, *me.children(recursive=True)]:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total


class PeakMemory:
    """Samples the resident memory of this process and all its descendants."""

    def __init__(self, every: float = 0.2):
        self.peak, self.every, self._stop = 0, every, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark the scoring job (prints JSON).")
    parser.add_argument("--model", choices=["tiny", "null", "full", "heads"], default="tiny")
    parser.add_argument(
        "--images",
        type=int,
        help="images through the model and the job (default: tiny 256, null 4096, full 32; heads: embeddings, "
        "Large 40,000 and Small 5x as many)",
    )
    parser.add_argument("--decode-images", type=int, default=40)
    parser.add_argument("--batch-size", type=int, help="default: tiny and null 32, full 4")
    parser.add_argument(
        "--out", type=Path, help="also write the JSON here (e.g. benchmarks/results/<date>-<machine>.json)"
    )
    args = parser.parse_args()
    count = args.images or {"tiny": 256, "null": 4096, "full": 32, "heads": 40_000}[args.model]
    batch_size = args.batch_size or {"full": 4, "heads": 1024}.get(args.model, 32)
    with PeakMemory() as memory:
        if args.model == "heads":
            figures = rescore_figures(count, batch_size)
        elif args.model == "null":
            figures = pipeline_figures(count, batch_size, args.decode_images)
        else:
            figures = model_and_job_figures(args.model, count, batch_size, args.decode_images)
    text = json.dumps(
        {
            "machine": f"{os.cpu_count()} {platform.machine()} CPUs ({cpu_description()})",
            "images": count,
            "batch_size": batch_size,
            "source_jpeg_px": SOURCE_SIZE,
            **figures,
            "peak_rss_mb": round(memory.peak / 2**20),
        },
        indent=2,
    )
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


def model_and_job_figures(kind: str, count: int, batch_size: int, decode_images: int) -> dict:
    """Decode vs PIL, every model path against PyTorch, and the job with the fast-path model."""
    fp32_dir, fast_dir = exported_model(kind, "fp32"), exported_model(kind, "int8")
    info = load_model_info(fast_dir)
    figures = decode_figures(jpegs(decode_images), info.image_size, info.resize_filter)
    images = jpegs(count)
    pixels = np.stack([decode_image(d, info.image_size, info.resize_filter, fast=True) for d in images])
    model, model_ips = model_figures(fp32_dir, fast_dir, pixels, batch_size)
    # before this process starts Ray: each command starts its own
    latency_figures = latency(fast_dir, images) if kind == "tiny" else {}
    samples = (
        (f"img-{i:05d}", {"jpg": d, "json": json.dumps(demo_metadata(i)).encode()}) for i, d in enumerate(images)
    )
    result = job_run(samples, max(1, count // 8), fast_dir, batch_size)
    e2e = result.figures["images_per_s"]
    return {
        "model": f"synthetic {kind} Large, {info.image_size} px; fast path {info.precision}",
        **figures,
        **model,
        "e2e_images_per_s": e2e,
        "pipeline_efficiency": round(e2e / model_ips, 3),
        # the job's wall time beyond the model's own time for these images: start-up (model check, actor and
        # session start, first batch) and anything the pipeline fails to overlap; a longer run amortises it
        "pipeline_overhead_s": round(result.figures["wall_s"] - count / model_ips, 1),
        "e2e_exit_code": result.exit_code,
        **latency_figures,
    }


def pipeline_figures(count: int, batch_size: int, decode_images: int) -> dict:
    """The job's own cost: the null model (384 px input, next to no compute) through the whole job.

    The ideal is what the cores could do if each image cost only its decode and its model call:
    cores / (1/decode_per_core + 1/model_only), both measured here on one core. The ceiling is the job's rate
    from its first scored batch to its end (start-up is reported on its own); the CPU each stage took per image
    comes from the run's manifest, and Ray's own share from every process's CPU time."""
    model_dir = exported_model("null", "fp32", head_size="small")
    info = load_model_info(model_dir)
    distinct = jpegs(64)  # the job decodes every image anew: 64 distinct faces repeated are as costly as 4,096
    decode_per_core = best_rates(
        {"decode": lambda d: decode_image(d, info.image_size, info.resize_filter, fast=True)},
        distinct[:decode_images],
    )["decode"]
    pixels = np.stack([decode_image(d, info.image_size, info.resize_filter, fast=True) for d in distinct])
    scorer = ort_scorer(model_dir, SessionOptions(intra_op_threads=1))
    model_only = measure(scorer.run, np.concatenate([pixels] * 4), batch_size).images_per_s
    cores = os.cpu_count() or 1
    ideal = cores / (1 / decode_per_core + 1 / model_only)
    samples = ((f"img-{i:05d}", {"jpg": distinct[i % len(distinct)]}) for i in range(count))
    cpu = ProcessTreeCPU()
    # one ONNX Runtime thread, as in model_only: the null model needs no more, and idle threads spinning between
    # its operators would take CPU from the decode tasks
    result = job_run(samples, 512, model_dir, batch_size, measured=cpu, threads_per_worker=1)
    run = result.figures
    stages = run["cpu_ms_per_image"]
    ceiling = run["scoring_images_per_s"]
    return {
        "model": f"synthetic null ({info.image_size} px, next to no compute), {info.precision}",
        "decode_per_core_images_per_s": round(decode_per_core, 1),
        "model_only_images_per_s": round(model_only, 1),
        "ideal_images_per_s": round(ideal, 1),
        "pipeline_ceiling_images_per_s": ceiling,
        "pipeline_ceiling_ratio": round(ceiling / ideal, 3),
        "e2e_images_per_s": run["images_per_s"],
        "e2e_ratio": round(run["images_per_s"] / ideal, 3),
        "startup_s": run["startup_s"],
        "cpu_ms_per_image": stages,
        # what no stage of ours accounts for: Ray's processes (object transfer, batching, its internal actors)
        "ray_cpu_ms_per_image": round(cpu.seconds * 1000 / count - sum(stages.values()), 3),
        "all_cpu_ms_per_image": round(cpu.seconds * 1000 / count, 3),
        "e2e_exit_code": result.exit_code,
    }


def rescore_figures(count: int, batch_size: int, per_shard: int = 2000) -> dict:
    """`rescore` with the 44 Small and Large heads (1152-d, heads-only exports of the synthetic `wide` tower) over
    generated unit-length embeddings stored as an output scored with --embedding (shards of `per_shard`, two
    metadata fields): the job's embeddings/s over the whole run and after its first batch, against the heads
    alone (ONNX Runtime on every core, the job's fixed-size calls; the mean of a timing before and one after the
    run); and Ray Data's own floor for the plan over as many embeddings, against the heads alone around it."""
    figures = {"model": "synthetic wide tower (1152-d embedding), heads-only fp32"}
    for size, embeddings in (("large", count), ("small", count * 5)):
        heads_dir = exported_model("wide", "fp32", head_size=size, heads_only=True)
        info = load_model_info(heads_dir)
        scorer = ort_scorer(heads_dir, SessionOptions(intra_op_threads=os.cpu_count() or 1))
        # the heads alone over as many embeddings as the run, up to 50,000: a few batches were too short to time
        # steadily on a shared machine; and before and after the run, whose mean is the reference (a shared
        # machine's speed drifts from one minute to the next)
        sample = unit_embeddings(np.random.default_rng(0), min(embeddings, 50_000), info.embedding_dim)
        alone = [measure(scorer.run, sample, batch_size).images_per_s]
        with tempfile.TemporaryDirectory() as work:
            source = embedding_output(Path(work) / "source", info, embeddings, per_shard)
            ensure_ray()
            config = rescore_config(
                str(source), str(Path(work) / "out"), str(heads_dir), batch_size=batch_size, progress="off", stats=False
            )
            with DriverBytes() as to_driver:
                run = run_score(config).figures
        alone.append(measure(scorer.run, sample, batch_size).images_per_s)
        floor = heads_floor_rate(str(heads_dir), embeddings, per_shard, batch_size)
        alone.append(measure(scorer.run, sample, batch_size).images_per_s)
        model_only = statistics.mean(alone[:2])
        whole = run["images_per_s"]
        scoring = run["scoring_images_per_s"]
        driver_ms = run["cpu_ms_per_image"]
        figures[size] = {
            "heads": len(info.heads),
            "mflop_per_embedding": round(2 * head_macs(info) / 1e6, 1),
            "embeddings": embeddings,
            "model_only_embeddings_per_s": round(model_only),
            "model_only_before_and_after_the_run": [round(rate) for rate in alone[:2]],
            "e2e_embeddings_per_s": round(whole),
            "scoring_embeddings_per_s": round(scoring),
            "pipeline_efficiency": round(scoring / model_only, 3),
            "startup_s": run["startup_s"],
            "minutes_for_400k": round(400_000 / scoring / 60, 1),
            "whole_run_ratio": round(whole / model_only, 3),
            # Ray Data's own floor for this plan (devtools/ray_floor.heads_floor_rate: a shard a read task, the heads
            # on a fixed batch, nothing read or written) over the heads alone timed before and after it
            "ray_data_floor_embeddings_per_s": round(floor),
            "ray_data_floor_ratio": round(floor / statistics.mean(alone[1:]), 3),
            # the job's whole run against that floor: what the job costs beyond Ray Data's own plan, which the
            # heads' speed does not change the way it changes the ratio to the heads alone
            "whole_run_over_ray_data_floor": round(whole / floor, 3),
            # the driver's CPU per row: the job's own steps, and Ray Data's iteration in the driver process
            "driver_cpu_us_per_row": {
                "job": round((driver_ms.get("collect", 0) + driver_ms.get("commit", 0)) * 1000, 2),
                "ray_data": round(driver_ms.get("ray_data_driver", 0) * 1000, 2),
            },
            # Ray Data's driver threads against the run's seconds and the blocks that reached the driver
            "ray_data_driver": {
                "cpu_s": round(driver_ms.get("ray_data_driver", 0) * embeddings / 1000, 2),
                "wall_s": run["wall_s"],
                "blocks": to_driver.blocks,
            },
            # no row reaches the driver: what does is the pieces' receipts (a few per block)
            "driver_bytes_per_row": round(to_driver.bytes / embeddings, 2),
            "cpu_ms_per_embedding": run["cpu_ms_per_image"],
        }
    return figures


class DriverBytes:
    """Counts the blocks and bytes (Arrow buffers) that reach the driver (edge.stream.result_batches) while the block
    runs."""

    def __enter__(self):
        from emonet_batch.edge import stream

        self.blocks = self.bytes = 0
        self._module, self._original = stream, stream.result_batches

        def counted(dataset):
            for batch in self._original(dataset):
                self.blocks += 1
                self.bytes += batch.nbytes
                yield batch

        stream.result_batches = counted
        return self

    def __exit__(self, *exc):
        self._module.result_batches = self._original


def head_macs(info) -> int:
    """Multiply-adds of the heads per embedding, from the checkpoint's layer widths."""
    from emonet_batch.export.checkpoint import HEAD_SIZES

    widths = (info.embedding_dim, *HEAD_SIZES[info.head_size], 1)
    return len(info.heads) * sum(a * b for a, b in zip(widths, widths[1:]))


if __name__ == "__main__":
    main()

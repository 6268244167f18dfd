"""Our `score` against what a user would write instead, side by side in one run; prints one JSON object.

    python benchmarks/peers.py [--images 4096] [--shards 16] [--rounds 3] [--heads small,large]

(`make bench-peers` runs it in .venv-bench, where Daft's pins fit: Daft 0.7 needs pyarrow < 26.)

The data: `--images` 1024 px JPEG faces (64 distinct ones repeated: each is decoded anew, so they cost what as many
distinct ones would) in `--shards` Parquet files in Hugging Face's `Image` layout (an `image` struct of bytes and
path, and a `key` column). The models: the synthetic null tower (384 px input, next to no compute) with the Small and
the Large heads, exported once into benchmarks/models/. Each contender runs in a fresh process, from the command to
its exit (start-up included), taking turns in each of `--rounds` rounds:

- ours: `emonet-batch score` with its default options (no stats, no progress);
- Ray Data's batch-inference pattern as its docs write it: `read_parquet`, a decode `map_batches` in tasks (PIL,
  the model's resize filter), an ONNX Runtime callable class in an actor pool, `write_parquet`;
- Daft: `read_parquet`, its native image decode and resize, a `@daft.cls` class holding the ONNX Runtime session
  with a batch method, `write_parquet`.

Every output must hold every key, with scores within TOLERANCE of ours run once with `--exact-decode` (the same
decode as the Ray Data pattern's; Daft resizes with its own filter, our default decodes in the DCT domain). The
JSON has each contender's median seconds and images/s, the ratios, and the ideal of bench.py's null model:
cores / (1/decode_per_core + 1/model_only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
PEERS = ("ours", "ray_data", "daft")
#: Largest |score difference| from ours with --exact-decode that an output may have. The Ray Data pattern decodes as
#: that does. Daft resizes with a filter of its own, and our default decodes in the DCT domain; the null tower hands
#: the pixels almost straight to the heads, so these null models are as sensitive to the decode as a model gets (our
#: fast decode moved their scores by up to 0.12 on 4,096 faces).
TOLERANCE = {"ours": 0.15, "ray_data": 1e-4, "daft": 0.15}
BATCH_SIZE = 32
SOURCE_SIZE = 1024


def write_data(directory: Path, images: int, shards: int) -> list[Path]:
    """The Parquet shards (written once per size into `directory`)."""
    from emonet_batch.devtools.samples import encode, face_image

    paths = [directory / f"part-{index:05d}.parquet" for index in range(shards)]
    if all(path.exists() for path in paths):
        return paths
    directory.mkdir(parents=True, exist_ok=True)
    distinct = [encode(face_image(i, size=SOURCE_SIZE), "JPEG", quality=90) for i in range(64)]
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    per_shard = -(-images // shards)
    for index, path in enumerate(paths):
        keys = [f"img-{i:06d}" for i in range(index * per_shard, min(images, (index + 1) * per_shard))]
        rows = [{"bytes": distinct[int(key[4:]) % len(distinct)], "path": f"{key}.jpg"} for key in keys]
        pq.write_table(pa.table({"image": pa.array(rows, image_type), "key": keys}), path)
    return paths


# --- the contenders, each run in a process of its own (--run) ----------------------------------------------


def run_ours(data: Path, model: Path, out: Path, exact: bool = False) -> None:
    command = [str(Path(sys.executable).with_name("emonet-batch")), "score", str(data), "--output", str(out)]
    command += ["--model", str(model), "--no-stats", "--progress", "off"] + (["--exact-decode"] if exact else [])
    finished(subprocess.run(command, capture_output=True, text=True), "emonet-batch score")


def run_ray_data(data: Path, model: Path, out: Path) -> None:
    """Ray's documented pattern for offline batch inference, with nothing of ours but the model's facts."""
    import onnxruntime as ort
    import ray
    from PIL import Image

    from emonet_batch.model.record import GRAPH_INPUT, GRAPH_OUTPUTS, load_model_info

    info = load_model_info(model, verify=False)
    size, resample = info.image_size, getattr(Image.Resampling, info.resize_filter.upper())

    def decode(batch: dict) -> dict:
        pixels = [
            np.asarray(Image.open(io.BytesIO(image["bytes"])).convert("RGB").resize((size, size), resample))
            for image in batch["image"]
        ]
        return {"key": batch["key"], "pixels": np.stack(pixels)}

    class Scorer:
        def __init__(self):
            self.session = ort.InferenceSession(str(info.onnx_path), providers=["CPUExecutionProvider"])

        def __call__(self, batch: dict) -> dict:
            scores = self.session.run([GRAPH_OUTPUTS[0]], {GRAPH_INPUT: batch["pixels"]})[0]
            return {"key": batch["key"], "scores": list(scores)}

    ray.init(include_dashboard=False)
    dataset = ray.data.read_parquet(str(data)).map_batches(decode, batch_size=BATCH_SIZE)
    dataset = dataset.map_batches(Scorer, concurrency=1, batch_size=BATCH_SIZE)
    dataset.write_parquet(str(out))


def run_daft(data: Path, model: Path, out: Path) -> None:
    """Daft's native image decode and resize, and a class UDF holding the session, as its docs write them."""
    import daft
    import onnxruntime as ort

    from emonet_batch.model.record import GRAPH_INPUT, GRAPH_OUTPUTS, load_model_info

    info = load_model_info(model, verify=False)
    size, heads = info.image_size, len(info.heads)

    @daft.cls
    class Scorer:
        def __init__(self, path: str):
            self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

        @daft.method.batch(return_dtype=daft.DataType.fixed_size_list(daft.DataType.float32(), heads),
                           batch_size=BATCH_SIZE)  # fmt: skip
        def __call__(self, images: daft.Series) -> list:
            pixels = np.stack(images.to_pylist()).astype(np.uint8)
            return list(self.session.run([GRAPH_OUTPUTS[0]], {GRAPH_INPUT: pixels})[0])

    scorer = Scorer(str(info.onnx_path))
    frame = daft.read_parquet(str(data / "*.parquet"))
    pixels = frame["image"].get("bytes").decode_image(mode="RGB").resize(size, size)
    frame.select(frame["key"], scorer(pixels).alias("scores")).write_parquet(str(out))


RUNNERS = {"ours": run_ours, "ray_data": run_ray_data, "daft": run_daft}


# --- the comparison -------------------------------------------------------------------------------------


def read_scores(peer: str, out: Path, heads: list[str]) -> dict[str, np.ndarray]:
    """key -> scores of one output (ours: one column per head; the peers: a `scores` list)."""
    table = pq.read_table(out / "labels" if peer == "ours" else out)
    keys = table.column("key").to_pylist()
    if peer == "ours":
        scores = np.stack([table.column(head).to_numpy() for head in heads], axis=1)
    else:
        scores = np.stack(table.column("scores").to_pylist())
    return dict(zip(keys, scores))


def timed_run(peer: str, data: Path, model: Path, out: Path) -> float:
    """Seconds of one contender in a fresh process, from the command to its exit."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, __file__, "--run", peer, "--data", str(data), "--model", str(model), "--out", str(out)]
    started = time.perf_counter()
    finished(subprocess.run(command, capture_output=True, text=True), peer)
    return time.perf_counter() - started


def finished(process: subprocess.CompletedProcess, name: str) -> None:
    if process.returncode:
        raise SystemExit(f"{name} failed (exit {process.returncode}):\n{process.stderr[-3000:]}")


def largest_difference(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    missing = set(want) - set(got)
    if missing or len(got) != len(want):
        raise SystemExit(f"an output lacks {len(missing)} keys or has others ({len(got)} rows, {len(want)} wanted)")
    return float(max(np.max(np.abs(got[key] - want[key])) for key in want))


def compare(model: Path, data: Path, images: int, rounds: int, work: Path) -> dict:
    from emonet_batch.model.record import load_model_info

    heads = list(load_model_info(model).heads)
    shutil.rmtree(work / "exact", ignore_errors=True)
    run_ours(data, model, work / "exact", exact=True)
    want = read_scores("ours", work / "exact", heads)
    seconds: dict[str, list[float]] = {peer: [] for peer in PEERS}
    difference: dict[str, float] = {}
    for round_ in range(rounds):
        for peer in PEERS[round_ % len(PEERS) :] + PEERS[: round_ % len(PEERS)]:  # each goes first once
            seconds[peer].append(timed_run(peer, data, model, work / peer))
            difference[peer] = largest_difference(read_scores(peer, work / peer, heads), want)
            if difference[peer] > TOLERANCE[peer]:
                raise SystemExit(f"{peer}: scores differ from ours by {difference[peer]:.3g} > {TOLERANCE[peer]}")
    medians = {peer: statistics.median(values) for peer, values in seconds.items()}
    return {
        "heads": f"{len(heads)} {load_model_info(model).head_size}",
        **{
            peer: {
                "median_s": round(medians[peer], 2),
                "images_per_s": round(images / medians[peer], 1),
                "runs_s": [round(s, 2) for s in seconds[peer]],
                "max_abs_score_diff_vs_ours_exact": difference[peer],
            }
            for peer in PEERS
        },
        "ours_over_daft": round(medians["daft"] / medians["ours"], 2),
        "ours_over_ray_data": round(medians["ray_data"] / medians["ours"], 2),
    }


def ideal(model: Path) -> dict:
    """bench.py's ideal for a model: cores / (1/decode_per_core + 1/model_only), both on one core."""
    from emonet_batch.devtools.benchmark import best_rates, measure, ort_scorer
    from emonet_batch.devtools.samples import encode, face_image
    from emonet_batch.job.decode import decode_image
    from emonet_batch.job.infer import SessionOptions
    from emonet_batch.model.record import load_model_info

    info = load_model_info(model)
    faces = [encode(face_image(i, size=SOURCE_SIZE), "JPEG", quality=90) for i in range(32)]

    def fast(data: bytes) -> np.ndarray:
        return decode_image(data, info.image_size, info.resize_filter, fast=True)

    decode = best_rates({"fast": fast}, faces)["fast"]
    pixels = np.stack([fast(data) for data in faces] * 8)
    model_only = measure(ort_scorer(model, SessionOptions(intra_op_threads=1)).run, pixels, BATCH_SIZE).images_per_s
    cores = os.cpu_count() or 1
    return {
        "decode_per_core_images_per_s": round(decode, 1),
        "model_only_images_per_s": round(model_only, 1),
        "ideal_images_per_s": round(cores / (1 / decode + 1 / model_only), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096, help="JPEG faces, 1024 px (default 4096)")
    parser.add_argument("--shards", type=int, default=16, help="Parquet files they are in (default 16)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each contender, taking turns (default 3)")
    parser.add_argument("--heads", default="small,large", help="head sizes of the null models (default both)")
    parser.add_argument("--run", choices=PEERS, help=argparse.SUPPRESS)  # one contender, in this process
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        RUNNERS[args.run](args.data, args.model, args.out)
        return

    from emonet_batch.devtools.benchmark import cpu_description, synthetic_model

    data = ROOT / "benchmarks" / "data" / f"peers-{args.images}-{args.shards}"
    paths = write_data(data, args.images, args.shards)
    figures: dict = {
        "machine": cpu_description(),
        "images": args.images,
        "shards": args.shards,
        "source_jpeg_px": SOURCE_SIZE,
        # 64 distinct faces repeated: Parquet compresses the repeats, so the files are smaller than the JPEGs
        "parquet_kb_per_image": round(sum(p.stat().st_size for p in paths) / args.images / 1024, 1),
        "jpeg_kb": round(
            statistics.mean(
                len(b) for b in pq.read_table(paths[0])["image"].combine_chunks().field("bytes").to_pylist()
            )
            / 1024,
            1,
        ),
        "rounds": args.rounds,
        "versions": versions(),
    }
    machine = re.sub(r"[^a-z0-9]+", "-", figures["machine"].lower()).strip("-")
    results = ROOT / "benchmarks" / "results" / f"{dt.date.today().isoformat()}-peers-{machine}.json"
    with tempfile.TemporaryDirectory() as work:
        for head_size in args.heads.split(","):
            model = synthetic_model(ROOT / "benchmarks" / "models", "null", "fp32", head_size=head_size)
            figures[f"null_{head_size}"] = {
                **compare(model, data, args.images, args.rounds, Path(work)),
                **ideal(model),
            }
            results.write_text(json.dumps(figures, indent=1) + "\n")  # each model's figures as soon as they exist
    print(results.read_text(), end="")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("emonet-batch", "ray", "daft", "onnxruntime", "pyarrow"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


if __name__ == "__main__":
    main()

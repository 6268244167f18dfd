"""Model-only throughput and accuracy of inference paths, measured in one run on one image set.

A path is a function uint8 pixels [N, S, S, 3] -> (scores, embedding). Each is timed over the same
batches after one warm-up batch, and compared with the reference path (PyTorch eager fp32:
`reference.reference_runner`) on the outputs of those same timed batches. Used by scripts/bench.py (CPU)
and scripts/gpu_bench.py (GPU). No torch here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EmonetError
from ..job.infer import OnnxScorer, SessionOptions
from ..model.accuracy import Parity, compare_outputs
from ..model.record import ModelInfo, load_model_info

Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class Measured:
    images_per_s: float
    scores: np.ndarray
    embedding: np.ndarray


def measure(run: Runner, pixels: np.ndarray, batch_size: int) -> Measured:
    """images/s over every batch of `pixels` (after one warm-up batch), and the outputs of those batches."""
    batches = [pixels[i : i + batch_size] for i in range(0, len(pixels), batch_size)]
    run(batches[0])  # warm-up: allocations, kernel selection, lazy initialisation
    started = time.perf_counter()
    outputs = [run(batch) for batch in batches]
    seconds = time.perf_counter() - started
    return Measured(
        len(pixels) / seconds, np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs])
    )


def accuracy(reference: Measured, got: Measured, info: ModelInfo) -> Parity:
    return compare_outputs(
        reference.scores, reference.embedding, got.scores, got.embedding, info.heads, info.neutral_means
    )


def ort_scorer(model_dir: Path, options: SessionOptions) -> OnnxScorer:
    """An ONNX Runtime session on `options.device`; a provider that did not load is an error, not a quiet CPU run."""
    scorer = OnnxScorer(load_model_info(model_dir), options)
    scorer.check_provider()
    return scorer


def synthetic_model(
    models: Path, kind: str, precision: str, head_size: str = "large", heads_only: bool = False
) -> Path:
    """The synthetic `kind` model at `precision` (same seed, so the same weights), exported once under `models`."""
    directory = models / f"{kind}-{head_size}-{'heads' if heads_only else precision}"
    try:
        load_model_info(directory)
    except EmonetError:
        from ..export import ExportConfig, export_model

        export_model(
            ExportConfig(
                out=directory, synthetic=kind, head_size=head_size, precision=precision, heads_only=heads_only,
                overwrite=True,
            )
        )  # fmt: skip
    return directory


def best_rates(functions: dict, items, rounds: int = 5) -> dict[str, float]:
    """Best items/s of each function over `rounds` passes, the functions taking turns within a round: a
    pass of a few hundred milliseconds is easily slowed by the rest of the machine, and taking turns
    spreads any drift over all of them instead of one."""
    best = dict.fromkeys(functions, 0.0)
    for _ in range(rounds):
        for name, function in functions.items():
            started = time.perf_counter()
            for item in items:
                function(item)
            best[name] = max(best[name], len(items) / (time.perf_counter() - started))
    return best


def cpu_description() -> str:
    """CPU model and the matrix extensions the int8/bf16 kernels can use (Linux; "unknown" elsewhere)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    name = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "unknown"
    )
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
    return f"{name}; {' '.join(f for f in wanted if f in flags) or 'no AVX2'}"


def path_figures(name: str, measured: Measured, reference: Measured | None, info: ModelInfo) -> dict[str, float]:
    """`<name>_images_per_s` and, against the reference, `<name>_max_abs_err`, `_embedding_cos_min` and
    `_top_agreement`."""
    figures = {f"{name}_images_per_s": round(measured.images_per_s, 4)}
    if reference is not None:
        parity = accuracy(reference, measured, info)
        figures.update(
            {
                f"{name}_max_abs_err": float(f"{parity.max_abs_score_diff:.3g}"),
                f"{name}_embedding_cos_min": round(parity.embedding_cosine_min, 6),
                f"{name}_top_agreement": round(parity.top_emotion_agreement, 4),
            }
        )
    return figures


def unit_embeddings(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    """`count` random float32 embeddings of length one, as a tower's normalised output is."""
    embedding = rng.standard_normal((count, dim)).astype(np.float32)
    return embedding / np.linalg.norm(embedding, axis=1, keepdims=True)


def embedding_output(output: Path, info: ModelInfo, count: int, per_shard: int) -> Path:
    """An output as `score --embedding --meta-fields gender,age` leaves it, committed by the job's own commit step,
    with generated embeddings and scores (the heads of `info` read the embeddings; its record names their tower)."""
    from ..job.commit import commit_shard
    from ..job.config import LabelOptions, StorageOptions
    from ..job.inputs import make_shard
    from ..job.layout import LABEL_OPTIONS
    from ..job.pieces import rows_table
    from ..job.rows import COMPLETE, EMBEDDING, SAMPLE, SCORES, ShardEnd
    from ..job.storage import filesystem
    from ..run.resume import label_options
    from .samples import demo_metadata

    fs, root = filesystem(str(output), StorageOptions())
    labels = LabelOptions(embedding=True, meta_fields=("gender", "age"))
    output.mkdir(parents=True)
    (output / LABEL_OPTIONS).write_text(json.dumps(label_options(info, labels)))
    rng = np.random.default_rng(1)
    for first in range(0, count, per_shard):
        rows = min(per_shard, count - first)
        shard = make_shard(f"/generated/shard-{first // per_shard:05d}.tar")
        columns = {
            "kind": np.full(rows, SAMPLE, dtype=object),
            "shard": np.full(rows, shard.shard_id, dtype=object),
            "seq": np.arange(rows),
            "key": np.array([f"img-{first + i:07d}" for i in range(rows)], dtype=object),
            "meta": np.array([json.dumps(demo_metadata(first + i)) for i in range(rows)], dtype=object),
            **{name: np.full(rows, None, dtype=object) for name in ("stage", "error_type", "message")},
            SCORES: rng.standard_normal((rows, len(info.heads))).astype(np.float32),
            EMBEDDING: unit_embeddings(rng, rows, info.embedding_dim),
        }
        commit_shard(fs, root, shard, rows_table(columns), ShardEnd(rows, COMPLETE), info, labels, "generated")
    return output

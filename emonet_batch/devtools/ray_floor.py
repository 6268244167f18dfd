"""Ray Data's own floors, the plans of our shape with nothing of emonet-batch in them:

- start-up: the embedded runtime exactly as `score` starts it, then the smallest plan of the same shape (one read
  task, one actor, one batch). scripts/bench.py runs it as a fresh process next to `score` so the two start-ups
  compare within one run: what `score` takes beyond this is ours to cut, the rest is Ray's.
  Run as `python -m emonet_batch.devtools.ray_floor`; prints {"first_batch_s": ...}, seconds from this module's
  start (before Ray is imported) to the first batch, as the manifest's `startup_s` counts from the run's start.
- a rescore's throughput (heads_floor_rate): row numbers read inside an actor pool (the read fused into it, as a
  CPU rescore's is), one read task per shard-sized run of rows in blocks of the model's batch, as the job reads a
  shard; the actors score one fixed batch of embeddings per block with the heads: no file read, checked or
  written.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import json  # noqa: E402  (after the clock starts: imports are part of the start-up measured)

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import ray  # noqa: E402
from ray.data.block import BlockMetadata  # noqa: E402
from ray.data.datasource import Datasource, ReadTask  # noqa: E402

from ..edge.runtime import ensure_ray, stop_ray  # noqa: E402

ROWS = 8  # the benchmark's one shard of 8 images


class PassThrough:
    """The actor: returns its batch (what a model would score)."""

    def __call__(self, batch):
        return batch


def first_batch_seconds() -> float:
    ensure_ray()
    dataset = ray.data.range(ROWS, override_num_blocks=1).map_batches(
        PassThrough, batch_size=ROWS, compute=ray.data.ActorPoolStrategy(size=1)
    )
    next(iter(dataset.iter_batches(batch_size=None)))
    return time.perf_counter() - STARTED


class RowNumbers(Datasource):
    """`rows` row numbers, one read task per `task_rows` (a shard) giving blocks of `block_rows`."""

    def __init__(self, rows: int, task_rows: int, block_rows: int):
        self.rows, self.task_rows, self.block_rows = rows, task_rows, block_rows

    def estimate_inmemory_data_size(self) -> int:
        return 8 * self.rows

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        return [self._task(first) for first in range(0, self.rows, self.task_rows)]

    def _task(self, first: int) -> ReadTask:
        stop = min(first + self.task_rows, self.rows)
        blocks = [
            pa.table({"row": np.arange(start, min(start + self.block_rows, stop))})
            for start in range(first, stop, self.block_rows)
        ]
        size = sum(block.nbytes for block in blocks)
        metadata = BlockMetadata(num_rows=stop - first, size_bytes=size, input_files=None, exec_stats=None)
        return ReadTask(lambda: blocks, metadata, schema=blocks[0].schema)


class FixedBatchHeads:
    """The actor: scores the same embeddings, as many as its block has rows, with the heads on one thread. Ray Data
    may merge a task's blocks, so a block holds up to `max_rows`: a task's rows."""

    def __init__(self, model_dir: str, max_rows: int):
        from ..job.infer import OnnxScorer, SessionOptions
        from ..model.record import load_model_info
        from .benchmark import unit_embeddings

        self.scorer = OnnxScorer(load_model_info(model_dir), SessionOptions(intra_op_threads=1))
        self.embedding = unit_embeddings(np.random.default_rng(0), max_rows, self.scorer.info.embedding_dim)

    def __call__(self, block: pa.Table) -> pa.Table:
        scores = self.scorer.run_heads(self.embedding[: block.num_rows])
        return pa.table({"row": block["row"], "first_score": scores[:, 0]})


def heads_floor_rate(model_dir: str, rows: int, task_rows: int, block_rows: int) -> float:
    """Rows a second, from the plan's start to its last block, of `rows` scored by the heads-only model at
    `model_dir`, read `task_rows` a task (a shard) in blocks of `block_rows`, in one one-thread actor per CPU of the
    cluster, as a CPU rescore has (see the module's text)."""
    # imported here, not above: the start-up floor times this module's own imports
    from ..edge.plan import inference_workers
    from ..job.config import EngineOptions

    ensure_ray()
    actors = inference_workers(EngineOptions(), heads_only=True)
    started = time.perf_counter()
    dataset = ray.data.read_datasource(RowNumbers(rows, task_rows, block_rows), num_cpus=0).map_batches(
        FixedBatchHeads,
        fn_constructor_kwargs={"model_dir": model_dir, "max_rows": task_rows},
        batch_size=None,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=0,
    )
    scored = sum(batch.num_rows for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"))
    if scored != rows:
        raise RuntimeError(f"the floor's plan scored {scored} of {rows} rows")
    return rows / (time.perf_counter() - started)


def main() -> None:
    seconds = first_batch_seconds()
    stop_ray()
    print(json.dumps({"first_batch_s": round(seconds, 3)}))


if __name__ == "__main__":
    main()

"""The Ray Data plan of a scoring run: each stage with its resources and batch size, next to the job-core
function it runs.

    read    ShardDatasource      CPU tasks, one per shard, READ_ROWS_PER_BLOCK rows per block
    decode  decode.decode_batch  CPU tasks, decode_batch_size rows per call
    infer   infer.InferStage     actor pool: one actor per GPU, or CPU actors holding one CPU slot each
"""

from __future__ import annotations

import os
import socket

import ray

from ..errors import UsageError
from ..job.config import EngineOptions, LabelOptions, StorageOptions
from ..job.decode import decode_batch
from ..job.infer import InferStage, SessionOptions
from ..job.inputs import Shard
from ..model.record import ModelInfo
from .datasource import ShardDatasource

#: Rows per block out of the read stage: small enough that decode starts early on a big shard.
READ_ROWS_PER_BLOCK = 64
#: Heap reserved per read+decode task. Declaring it also keeps Ray from fusing decode into the
#: inference actors (it fuses stages with equal resource requests), so decode runs on every CPU.
DECODE_TASK_MEMORY = 512 << 20


def inference_workers(engine: EngineOptions) -> int:
    """Explicit --workers, else one per GPU in the cluster (GPU runs), else one CPU actor."""
    if engine.workers:
        return engine.workers
    if engine.gpus_per_worker > 0:
        gpus = ray.cluster_resources().get("GPU", 0)
        return max(1, int(gpus / engine.gpus_per_worker))
    return 1


def session_options(engine: EngineOptions, workers: int) -> SessionOptions:
    if engine.gpus_per_worker > 0:
        return SessionOptions(
            device=engine.execution_provider,
            intra_op_threads=1,
            trt_precision=engine.trt_precision,
            max_batch=engine.batch_size,
            trt_cache_dir=engine.trt_cache,
        )
    cpus = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    return SessionOptions(intra_op_threads=engine.threads_per_worker or max(1, cpus // workers))


def check_gpus(engine: EngineOptions) -> None:
    """GPU actors on a cluster without GPUs would wait forever for a placement: say so instead."""
    if engine.gpus_per_worker > 0 and ray.cluster_resources().get("GPU", 0) == 0:
        raise UsageError("--gpus-per-worker was given but the Ray cluster has no GPUs; leave it out to run on CPU")


def check_cpu_slots(engine: EngineOptions, workers: int) -> None:
    """CPU actors each hold a CPU slot; with none left, read/decode tasks would never be scheduled."""
    cpus = ray.cluster_resources().get("CPU", 0)
    if engine.gpus_per_worker == 0 and workers >= cpus:
        raise UsageError(
            f"--workers {workers} would take all {cpus:g} CPUs of the cluster and leave none for reading and decoding"
        )


def actor_resources(engine: EngineOptions) -> dict[str, float | None]:
    """What each inference actor asks Ray for: its GPU share, and one CPU slot only on CPU-only runs
    (a GPU actor's few CPU cycles are not worth starving a decode task of a slot)."""
    gpu = engine.gpus_per_worker > 0
    return {"num_gpus": engine.gpus_per_worker if gpu else None, "num_cpus": 0 if gpu else 1}


def build_dataset(
    shards: list[Shard],
    info: ModelInfo,
    labels: LabelOptions,
    engine: EngineOptions,
    storage: StorageOptions,
    require_provider: bool = True,
):
    """The plan over `shards`. require_provider=False lets actors run when ONNX Runtime could not load the
    GPU provider (only where GPUs are simulated, as in the tests); a real run always insists on it."""
    check_gpus(engine)
    workers = inference_workers(engine)
    check_cpu_slots(engine, workers)
    dataset = ray.data.read_datasource(
        ShardDatasource(shards, storage, READ_ROWS_PER_BLOCK, labels.key_column),
        override_num_blocks=len(shards),
        num_cpus=1,
        memory=DECODE_TASK_MEMORY,
    )
    dataset = dataset.map_batches(
        decode_batch,
        fn_kwargs={
            "size": info.image_size,
            "resize_filter": info.resize_filter,
            "max_pixels": labels.max_pixels,
            "fast": not labels.exact_decode,
        },
        batch_size=engine.decode_batch_size,
        batch_format="numpy",
        num_cpus=1,
        memory=DECODE_TASK_MEMORY,
    )
    return dataset.map_batches(
        InferStage,
        fn_constructor_kwargs={
            "model_dir": str(info.directory),
            "options": session_options(engine, workers),
            "with_embedding": labels.embedding,
            "check_provider": require_provider,
            "verified_on": socket.gethostname(),  # the run's load_model_info hashed the files on this host
        },
        batch_size=engine.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        **actor_resources(engine),  # ORT's threads are set separately (session_options)
    )

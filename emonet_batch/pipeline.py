"""Ray adapters: start or attach to Ray, and lay the stages out as a Ray Data plan.

Each stage states its resources and batch size here, next to the function it runs.
"""

from __future__ import annotations

import logging
import os
import socket

from .config import ScoreConfig
from .decode import decode_batch
from .errors import UsageError
from .infer import InferStage, SessionOptions
from .inputs import Shard
from .model import ModelInfo
from .read import shard_datasource

#: Rows per block out of the read stage: small enough that decode starts early on a big shard.
READ_ROWS_PER_BLOCK = 64
#: Heap reserved per read+decode task. Declaring it also keeps Ray from fusing decode into the
#: inference actors (it fuses stages with equal resource requests), so decode runs on every CPU.
DECODE_TASK_MEMORY = 512 << 20
#: The embedded runtime's object store: enough for a few hundred decoded 384px images in flight.
EMBEDDED_OBJECT_STORE_BYTES = 1 << 30


def ensure_ray() -> None:
    """Attach to RAY_ADDRESS when set; otherwise start a local runtime sized to this machine."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=logging.WARNING)
    else:
        ray.init(
            # "local": a fresh runtime even when a `ray start` cluster runs on this machine (attach via RAY_ADDRESS)
            address="local", num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=EMBEDDED_OBJECT_STORE_BYTES,
            logging_level=logging.WARNING, configure_logging=True, log_to_driver=False,
        )  # fmt: skip
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # our own progress display replaces Ray's bars
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def inference_workers(config: ScoreConfig) -> int:
    """Explicit --workers, else one per GPU in the cluster (GPU runs), else one CPU actor."""
    import ray

    if config.workers:
        return config.workers
    if config.gpus_per_worker > 0:
        gpus = ray.cluster_resources().get("GPU", 0)
        return max(1, int(gpus / config.gpus_per_worker))
    return 1


def session_options(config: ScoreConfig, workers: int) -> SessionOptions:
    import ray

    if config.gpus_per_worker > 0:
        return SessionOptions(
            device=config.gpu_provider, intra_op_threads=1, trt_precision=config.trt_precision, max_batch=config.batch_size,
            trt_cache_dir=config.trt_cache_dir,
        )  # fmt: skip
    cpus = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    return SessionOptions(intra_op_threads=config.threads_per_worker or max(1, cpus // workers))


def check_gpus(config: ScoreConfig) -> None:
    """GPU actors on a cluster without GPUs would wait forever for a placement: say so instead."""
    import ray

    if config.gpus_per_worker > 0 and ray.cluster_resources().get("GPU", 0) == 0:
        raise UsageError("--gpus-per-worker was given but the Ray cluster has no GPUs; leave it out to run on CPU")


def check_cpu_slots(config: ScoreConfig, workers: int) -> None:
    """CPU actors each hold a CPU slot; with none left, read/decode tasks would never be scheduled."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 0)
    if config.gpus_per_worker == 0 and workers >= cpus:
        raise UsageError(f"--workers {workers} would take all {cpus:g} CPUs of the cluster and leave none for reading and decoding")


def actor_resources(config: ScoreConfig) -> dict[str, float | None]:
    """What each inference actor asks Ray for: its GPU share, and one CPU slot only on CPU-only runs
    (a GPU actor's few CPU cycles are not worth starving a decode task of a slot)."""
    gpu = config.gpus_per_worker > 0
    return {"num_gpus": config.gpus_per_worker if gpu else None, "num_cpus": 0 if gpu else 1}


def build_dataset(shards: list[Shard], info: ModelInfo, config: ScoreConfig):
    import ray

    check_gpus(config)
    workers = inference_workers(config)
    check_cpu_slots(config, workers)
    dataset = ray.data.read_datasource(
        shard_datasource(shards, config.storage, READ_ROWS_PER_BLOCK),
        override_num_blocks=len(shards),
        num_cpus=1,
        memory=DECODE_TASK_MEMORY,
    )
    dataset = dataset.map_batches(
        decode_batch,
        fn_kwargs={"size": info.image_size, "resize_filter": info.resize_filter, "max_pixels": config.max_pixels,
                   "fast": config.fast_decode},
        batch_size=config.decode_batch_size,
        batch_format="numpy",
        num_cpus=1,
        memory=DECODE_TASK_MEMORY,
    )
    return dataset.map_batches(
        InferStage,
        fn_constructor_kwargs={
            "model_dir": str(info.directory),
            "options": session_options(config, workers),
            "with_embedding": config.embedding,
            "check_provider": not config.allow_cpu_fallback,
            "verified_on": socket.gethostname(),  # run_score's load_model_info hashed the files on this host
        },
        batch_size=config.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        **actor_resources(config),  # ORT's threads are set separately (session_options)
    )

"""The Ray Data plan of a scoring run: each stage with its resources and batch size, next to the job-core
function it runs.

    read           datasource.ShardDatasource  CPU tasks, one per shard, reading it through the run's source
                   (job/sources.py: images decoded decode_batch_size at a time, or a rescore's stored embeddings);
                   on CPU a rescore's read runs inside the inference actors instead (reads_in_actors)
    infer          ArrowInferStage (InferStage)  actor pool: one actor per GPU, or CPU actors spread over the nodes;
                   each writes the rows it scored as pieces (job/pieces.py), or with a fused read stages the
                   whole shards it scored (job/whole.py), and passes on only their receipts

Blocks are kept near BLOCK_BYTES and typed by the row protocol (job/rows.typed_rows; the model's input a tensor column).
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data.block import BlockAccessor

from ..job.config import EngineOptions, LabelOptions, StorageOptions
from ..job.fetch import is_remote
from ..job.infer import InferStage, SessionOptions, infer_columns
from ..job.inputs import Shard
from ..job.pieces import PieceWriter
from ..job.rows import SAMPLE, check_stages, piece_columns
from ..job.sources import Source
from ..job.storage import filesystem
from ..job.whole import WholeShardWriter
from ..model.record import ModelInfo
from .datasource import ShardDatasource
from .waits import board_name

#: Ray Data's target block size for this plan (its default is 128 MiB). Ray merges a task's outputs up to it: at
#: the default, decoded pixels (442 KB an image) left a task in blocks of ~290 images, which reach the actors late
#: and fill the object store. 32 MiB is ~70 decoded 384 px images (benchmarks/README.md has the measurements).
BLOCK_BYTES = 32 << 20
#: Heap reserved per read+decode task.
DECODE_TASK_MEMORY = 512 << 20


def inference_workers(engine: EngineOptions, heads_only: bool = False) -> int:
    """Explicit --workers, else one per GPU in the cluster (GPU runs), else for a heads-only model (rescore) one
    single-thread actor per CPU in the cluster, else one CPU actor (with every core of its node). The heads are
    light (a few MB to 325 MB) and cheap per call: on 2 cores two 1-thread actors rescored 13,600 embeddings/s
    with the Small heads against 10,700 for one 2-thread actor (scripts/bench.py --model heads)."""
    if engine.workers:
        return engine.workers
    if engine.gpus_per_worker > 0:
        gpus = ray.cluster_resources().get("GPU", 0)
        return max(1, int(gpus / engine.gpus_per_worker))
    if heads_only:
        return max(1, int(ray.cluster_resources().get("CPU", 1)))
    return 1


def reads_in_actors(info: ModelInfo, engine: EngineOptions) -> bool:
    """Whether each inference actor reads the shards it scores (Ray Data fuses the read into the actor pool): a
    heads-only model on CPU actors, one per core. Stored embeddings cost a few percent of their scoring to read;
    read in separate tasks they went through the object store and kept two more processes busy, taking CPU from the
    actors (benchmarks/README.md has the figures). GPU actors keep separate read tasks: a GPU scores the heads
    far faster than one process reads their embeddings."""
    return info.heads_only and engine.gpus_per_worker <= 0


def session_options(engine: EngineOptions, workers: int) -> SessionOptions:
    if engine.gpus_per_worker > 0:
        return SessionOptions(
            device=engine.execution_provider or "cuda",
            intra_op_threads=1,
            trt_precision=engine.trt_precision or "fp16",
            max_batch=engine.batch_size,
            trt_cache_dir=engine.trt_cache,
        )
    nodes = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]]
    return SessionOptions(intra_op_threads=engine.threads_per_worker, actors_per_node=actors_per_node(workers, nodes))


def actors_per_node(workers: int, node_cpus: list[float]) -> int:
    """CPU actors per node when Ray spreads `workers` over the nodes that have CPUs."""
    return max(1, math.ceil(workers / max(1, sum(1 for cpus in node_cpus if cpus > 0))))


def actor_resources(engine: EngineOptions) -> dict[str, float | None]:
    """What each inference actor asks Ray for: its GPU share, and no CPU slot. A CPU actor is busy only while
    it scores a batch, and the decode tasks use every core in between (the system shares the cores); a slot held
    for it left a 2-core machine one core to decode on. Ray Data spreads the actors over the nodes (its default
    scheduling strategy, SPREAD)."""
    return {"num_gpus": engine.gpus_per_worker if engine.gpus_per_worker > 0 else None, "num_cpus": 0}


def build_dataset(
    shards: list[Shard],
    source: Source,
    model: str,
    info: ModelInfo,
    labels: LabelOptions,
    engine: EngineOptions,
    storage: StorageOptions,
    pieces: Pieces,
    require_provider: bool = True,
):
    """The plan over `shards`, read through `source`, with `model` (a directory, or a URL each node fetches; `info`
    is its record), on a cluster that has the resources (capacity.ensure_capacity), whose scored rows are written as
    `pieces`.
    require_provider=False lets actors run when ONNX Runtime could not load the GPU provider (only where GPUs
    are simulated, as in the tests); a real run always insists on it."""
    datasource = ShardDatasource(shards, source, board_name(pieces.attempt))
    check_stages(
        datasource.schema.names,
        [("infer", infer_columns(info, labels.embedding)), ("pieces", piece_columns(labels.embedding))],
    )
    workers = inference_workers(engine, info.heads_only)
    fused = reads_in_actors(info, engine)
    ray.data.DataContext.get_current().target_max_block_size = BLOCK_BYTES  # sealed into the dataset made next
    dataset = ray.data.read_datasource(
        datasource,
        override_num_blocks=len(shards),
        # the actors' own resources let Ray Data fuse the read into them
        **(actor_resources(engine) if fused else {"num_cpus": 1, "memory": DECODE_TASK_MEMORY}),
    )
    return dataset.map_batches(
        ArrowInferStage,
        fn_constructor_kwargs={
            "model": model if is_remote(model) else str(info.directory),
            "options": session_options(engine, workers),
            "with_embedding": labels.embedding,
            "check_provider": require_provider,
            "verified_on": socket.gethostname(),  # the run's load_model_info hashed the files on this host
            "storage": storage,
            "model_id": info.model_id,
            "pieces": pieces,
            # a fused read gives each actor whole shards: it stages their files itself (job/whole.py)
            "whole_shards": labels if fused else None,
        },
        # a fused read's blocks are model batches already (EmbeddingSource.rows_per_block); a batch size would
        # keep Ray Data from fusing (it fuses a read only into a stage that takes blocks as they come)
        batch_size=None if fused else engine.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=workers),
        **actor_resources(engine),  # ORT's threads are set separately (session_options)
    )


@dataclass(frozen=True)
class Pieces:
    """Where the inference actors write the rows they score: the run's output (with its storage options) and the
    attempt whose staging holds the pieces."""

    output: str
    storage: StorageOptions
    attempt: str


class ArrowInferStage(InferStage):
    """The infer stage on Arrow blocks: only the model's input (pixels or embeddings) and the row kinds become
    numpy (without a copy); the scored rows are written where they were scored, as pieces or, with `whole_shards`
    (the label options), as the staged files of the whole shards this actor scores, and only their receipts go on
    to the driver."""

    def __init__(self, *, pieces: Pieces, whole_shards: LabelOptions | None, **session):
        super().__init__(**session)
        fs, output = filesystem(pieces.output, pieces.storage)
        if whole_shards is None:
            self.writer = PieceWriter(fs, output, pieces.attempt, self.worker)
        else:
            self.writer = WholeShardWriter(fs, output, pieces.attempt, self.worker, self.scorer.info, whole_shards)

    def __call__(self, block: pa.Table) -> pa.Table:
        is_sample = pc.equal(block["kind"], SAMPLE).to_numpy(zero_copy_only=False)
        inputs = BlockAccessor.for_block(block).to_numpy(self.input_column)
        return self.writer.write(block.drop_columns([self.input_column]), self.outputs(is_sample, inputs))

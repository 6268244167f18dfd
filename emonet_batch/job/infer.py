"""ONNX Runtime inference over an exported model: uint8 pixels in, raw head scores and embeddings out."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..model.record import FULL, GRAPH_INPUT, GRAPH_OUTPUTS, HEADS_INPUT, HEADS_ONLY, HEADS_OUTPUTS, ModelInfo
from .accelerator import PROVIDERS, gpu_problem, load_gpu_libraries
from .config import THREADED_TOWER_MIN_CALL_S, StorageOptions
from .rows import EMBEDDING, INFER_CPU, PIXELS, SCORES, WORKER, StageColumns, cpu_share

TRT_PRECISIONS = ("fp16", "bf16", "fp32")
#: Rows in every call of the heads (the last call of a batch padded with zeros), so that an embedding's scores
#: never depend on how many others share its batch: ONNX Runtime's matrix kernels are chosen by the row count, so
#: another count can give a row other low bits. Fixed, not --batch-size, so that no option changes a label. A
#: rescore (a heads-only model) gives the heads thousands of stored embeddings; a score on a CPU a batch of
#: images, and at 32 rows a call the heads' weights are read from memory once per 32 images instead of per image.
HEADS_CALL_ROWS = {HEADS_ONLY: 256, FULL: 32}
#: Where each node keeps TensorRT engines when no --trt-cache is given.
DEFAULT_TRT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "emonet-batch", "tensorrt")


@dataclass(frozen=True)
class SessionOptions:
    """ONNX Runtime session settings (docs/usage.md, "Performance and tuning", says how they were chosen).

    device: cpu | cuda | tensorrt (TensorRT falls back to CUDA for what it cannot take).
    intra_op_threads: 0 gives a CPU session its share of the CPUs of the node it runs on (node CPUs /
      actors_per_node); GPU sessions take 1.
    actors_per_node: how many CPU actors share a node (the plan spreads them evenly).
    trt_precision: the reduced precision TensorRT may choose kernels in: fp16 (meant for the fp16 export), bf16
      (Ampere and newer; meant for the fp32 export: bf16 has fp32's range, so LayerNorm statistics cannot
      overflow), or fp32 (none).
    max_batch: the largest batch a TensorRT engine is built for (its dynamic-batch profile is 1..max_batch).
    trt_cache_dir: where TensorRT engines and timing caches are kept between runs (built once per GPU
      model and shape profile: minutes for the full tower, then seconds to load)."""

    device: str = "cpu"
    intra_op_threads: int = 0
    actors_per_node: int = 1
    trt_precision: str = "fp16"
    max_batch: int = 32
    trt_cache_dir: str | None = None

    @property
    def provider(self) -> str:
        return PROVIDERS[self.device]


def provider_list(options: SessionOptions, image_size: int) -> list[tuple[str, dict[str, Any]]]:
    """The providers in priority order, each with its options; CPU always last (shape ops and fallbacks)."""
    cuda = (
        "CUDAExecutionProvider",
        {"device_id": 0, "cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": True},
    )
    cpu = ("CPUExecutionProvider", {})
    if options.device == "cpu":
        return [cpu]
    if options.device == "cuda":
        return [cuda, cpu]
    if options.device == "tensorrt":
        if options.trt_precision not in TRT_PRECISIONS:
            raise ValueError(
                f"unknown TensorRT precision {options.trt_precision!r}; choose from {', '.join(TRT_PRECISIONS)}"
            )
        shape = lambda batch: f"pixels:{batch}x{image_size}x{image_size}x3"  # noqa: E731
        cache = options.trt_cache_dir or DEFAULT_TRT_CACHE
        trt = {
            "device_id": 0,
            # fp16 lets TensorRT pick fp16 kernels for any layer: give it the fp16 export, whose LayerNorm and
            # softmax run in fp32 between explicit casts; scripts/gpu_bench.py measures the accuracy of each
            "trt_fp16_enable": options.trt_precision == "fp16",
            "trt_bf16_enable": options.trt_precision == "bf16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": cache,
            "trt_profile_min_shapes": shape(1),
            "trt_profile_opt_shapes": shape(options.max_batch),
            "trt_profile_max_shapes": shape(options.max_batch),
        }
        return [("TensorrtExecutionProvider", trt), cuda, cpu]
    raise ValueError(f"unknown device {options.device!r}; choose from {', '.join(PROVIDERS)}")


def intra_op_threads(options: SessionOptions, node_cpus: int | None = None) -> int:
    """The session's intra-op threads: as given, else this node's CPUs shared by the actors on it. The node's,
    not the cluster's: an actor on one 16-core node of an 8-node cluster got 128 threads."""
    if options.intra_op_threads:
        return options.intra_op_threads
    return max(1, (node_cpus or usable_cpus()) // max(1, options.actors_per_node))


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's CPU set, where the system says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def ort_session_options(options: SessionOptions, spinning: bool = True):
    import onnxruntime as ort

    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = intra_op_threads(options)
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session_options.enable_cpu_mem_arena = True  # batches have one shape: the arena's blocks are reused as they are
    # Idle intra-op threads spin instead of sleeping between operators (ORT's default, set to say so): with
    # sleeping threads every one of the graph's thousands of operators waits for a wake-up. A session called
    # between another's calls (the heads between the tower's) must not: its spinning threads would take the
    # other's cores.
    session_options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return session_options


class OnnxScorer:
    """ONNX Runtime sessions; `run` maps uint8 [N, S, S, 3] to (scores [N, H], embedding [N, D]) float32, or for a
    heads-only model float32 embeddings [N, D] to (scores, the same embeddings).

    On a CPU a full model runs as its two halves: the tower one image a call, so that an image's scores never
    depend on the images that share its batch (the int8 tower quantises activations with scales taken over the
    whole call, and even fp32 kernels block sums differently for other batch sizes; a single 384px image is
    already hundreds of rows per matrix product), and the heads on fixed-size padded calls (HEADS_CALL_ROWS).
    On a GPU the fused graph takes the whole batch, bound with IOBinding: the pixels are copied to the device
    once, and only the scores and embeddings come back to host memory."""

    def __init__(self, info: ModelInfo, options: SessionOptions = SessionOptions()):
        self.info = info
        self.options = options
        if options.device != "cpu":
            load_gpu_libraries()
        self.halves = options.device == "cpu" and not info.heads_only
        # the session whose providers are checked: the tower's, or the only one
        self.session = self.open(info.tower_path if self.halves else info.onnx_path)
        self.heads = self.open(info.heads_path, spinning=False) if self.halves else self.session
        # the tower's threads, when not given, are settled by its first batch (THREADED_TOWER_MIN_CALL_S)
        self.sizing_tower = self.halves and not options.intra_op_threads

    def open(self, path: Path, spinning: bool = True, options: SessionOptions | None = None):
        import onnxruntime as ort

        options = options or self.options
        providers = provider_list(options, self.info.image_size)
        return ort.InferenceSession(
            str(path),
            ort_session_options(options, spinning),
            providers=[name for name, _ in providers],
            provider_options=[opts for _, opts in providers],
        )

    def run(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.info.heads_only:
            return self.run_heads(inputs), inputs
        size = self.info.image_size
        if inputs.dtype != np.uint8 or inputs.ndim != 4 or inputs.shape[1:] != (size, size, 3):
            raise ValueError(f"pixels must be uint8 [N, {size}, {size}, 3], got {inputs.dtype} {inputs.shape}")
        pixels = np.ascontiguousarray(inputs)
        if self.halves:
            embedding = self.run_tower(pixels)
            return self.run_heads(embedding), embedding
        return self.run_fused(pixels)

    def run_heads(self, embedding: np.ndarray) -> np.ndarray:
        dim = self.info.embedding_dim
        if embedding.dtype != np.float32 or embedding.ndim != 2 or embedding.shape[1] != dim:
            raise ValueError(f"embeddings must be float32 [N, {dim}], got {embedding.dtype} {embedding.shape}")
        call_rows = HEADS_CALL_ROWS[self.info.kind]
        scores = np.empty((len(embedding), len(self.info.heads)), np.float32)
        call = np.zeros((call_rows, dim), np.float32)
        for first in range(0, len(embedding), call_rows):
            rows = len(embedding[first : first + call_rows])
            call[:rows] = embedding[first : first + rows]
            call[rows:] = 0.0
            (got,) = self.heads.run(list(HEADS_OUTPUTS), {HEADS_INPUT: call})
            scores[first : first + rows] = got[:rows]
        return scores

    def run_tower(self, pixels: np.ndarray) -> np.ndarray:
        """The embeddings, one image a call (the tower half's output is the heads' input)."""
        embedding = np.empty((len(pixels), self.info.embedding_dim), np.float32)
        started = time.perf_counter()
        for i in range(len(pixels)):
            (embedding[i : i + 1],) = self.session.run([HEADS_INPUT], {GRAPH_INPUT: pixels[i : i + 1]})
        if self.sizing_tower and len(pixels):
            self.sizing_tower = False
            if (time.perf_counter() - started) / len(pixels) < THREADED_TOWER_MIN_CALL_S:
                # one thread: nothing to wake or spin (threads decide the speed, never a score)
                self.session = self.open(self.info.tower_path, options=replace(self.options, intra_op_threads=1))
        return embedding

    def run_fused(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        binding = self.session.io_binding()
        binding.bind_cpu_input(GRAPH_INPUT, pixels)
        for name in GRAPH_OUTPUTS:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        scores, embedding = binding.copy_outputs_to_cpu()
        return scores, embedding

    @property
    def active_providers(self) -> list[str]:
        return self.session.get_providers()

    def check_provider(self) -> None:
        """ORT quietly drops a provider it cannot load and runs everything on the CPU: a GPU job would crawl
        unnoticed. Raise instead."""
        if self.options.provider not in self.active_providers:
            why = gpu_problem(self.options.device) or f"active: {', '.join(self.active_providers)}"
            raise RuntimeError(
                f"ONNX Runtime's {self.options.provider} is not active on {socket.gethostname()} ({why}); "
                f"`emonet-batch doctor --execution-provider {self.options.device}` there shows what it lacks"
            )


def model_input(info: ModelInfo) -> str:
    """The column a model reads: pixels, or for a heads-only model (a rescore) the stored embedding."""
    return EMBEDDING if info.heads_only else PIXELS


def infer_columns(info: ModelInfo, with_embedding: bool) -> StageColumns:
    """InferStage's columns: the model's input in, its scores (and the embedding, when the labels keep it) out."""
    gives = (SCORES, WORKER, INFER_CPU, *((EMBEDDING,) if with_embedding else ()))
    return StageColumns(takes=("kind", model_input(info)), gives=gives, drops=(model_input(info),))


class InferStage:
    """Ray actor body: one ORT session per actor, scoring the `sample` rows of each batch.

    Other rows pass through with NaN scores. A session whose intended provider did not load is an error
    (OnnxScorer.check_provider) unless `check_provider` is off (tests with fake GPUs). `model` is a directory or
    a URL (fetched into this node's cache, job/fetch.py). A local model's files are hashed again only on a host
    other than the driver's, which has just done it; a fetched one is verified by the fetch."""

    def __init__(
        self,
        model: str,
        options: SessionOptions,
        with_embedding: bool,
        check_provider: bool,
        verified_on: str,
        storage: StorageOptions | None = None,
        model_id: str | None = None,
    ):
        from ..model.record import load_model_info
        from .fetch import is_remote, local_model

        storage = storage or StorageOptions()
        # a model URL: this node's verified copy of the model the driver checked (`model_id`)
        directory = local_model(model, storage, storage.model_cache, expected_id=model_id)
        verify = not is_remote(model) and socket.gethostname() != verified_on
        self.scorer = OnnxScorer(load_model_info(directory, verify=verify), options)
        self.with_embedding = with_embedding
        # which actor scored a row: the driver sums images per worker into the manifest
        self.worker = f"{socket.gethostname()}:{os.getpid()}:gpu={os.environ.get('CUDA_VISIBLE_DEVICES', '-')}"
        if check_provider:
            self.scorer.check_provider()

    @property
    def input_column(self) -> str:
        return model_input(self.scorer.info)

    def outputs(self, is_sample: np.ndarray, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """The columns the infer stage adds, for rows whose model inputs are `inputs` and of which `is_sample`
        are samples (the others get NaN scores). A rescore's embedding column comes back as it went in."""
        started = time.process_time()  # the session's threads included
        count = len(inputs)
        info = self.scorer.info
        scores = np.full((count, len(info.heads)), np.nan, dtype=np.float32)
        embedding = np.full((count, info.embedding_dim), np.nan, dtype=np.float32) if self.with_embedding else None
        rows = np.flatnonzero(is_sample)
        if rows.size:
            # a batch of samples only (the usual case) goes as it is: picking rows would copy every image
            got_scores, got_embedding = self.scorer.run(inputs if rows.size == count else inputs[rows])
            scores[rows] = got_scores
            if embedding is not None:
                embedding[rows] = got_embedding
        added = {SCORES: scores, WORKER: np.full(count, self.worker, dtype=object)}
        if embedding is not None:
            added[EMBEDDING] = embedding
        added[INFER_CPU] = cpu_share(time.process_time() - started, count)
        return added

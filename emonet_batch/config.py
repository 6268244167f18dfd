"""The one typed configuration a scoring run is described by; the CLI only fills it in."""

from __future__ import annotations

from dataclasses import dataclass, field

from .preprocess import DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class StorageOptions:
    """How to reach object storage. Only non-secret settings: credentials come from the environment
    of whichever process touches storage (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, ...)."""

    endpoint_url: str | None = None

    def fsspec_options(self, protocol: str) -> dict:
        if self.endpoint_url and protocol in ("s3", "s3a"):
            return {"client_kwargs": {"endpoint_url": self.endpoint_url}}
        return {}


@dataclass(frozen=True)
class ScoreConfig:
    inputs: tuple[str, ...]
    output: str
    model: str
    # execution
    workers: int | None = None  # inference actors; None: one per GPU, or one on a CPU-only machine
    batch_size: int = 32  # images per inference call
    gpus_per_worker: float = 0.0
    gpu_provider: str = "cuda"  # cuda | tensorrt, for GPU actors
    trt_precision: str = "fp16"  # fp16 | bf16 | fp32: the reduced precision TensorRT may use
    trt_cache_dir: str | None = None  # TensorRT engine cache (default ~/.cache/emonet-batch/tensorrt on each node)
    allow_cpu_fallback: bool = False  # tests only (fake GPUs): do not insist on ONNX Runtime's GPU provider
    threads_per_worker: int | None = None  # ORT intra-op threads; None: the CPUs Ray sees / workers
    decode_batch_size: int = 16
    allow_inaccurate_model: bool = False  # score with a model whose recorded error exceeds accuracy.MAX_SCORE_ERROR etc.
    # output
    meta_fields: tuple[str, ...] = ()
    centered: bool = False
    softmax: bool = False
    embedding: bool = False
    overwrite: bool = False
    # limits
    max_error_rate: float = 0.01
    max_pixels: int = DEFAULT_MAX_PIXELS
    fast_decode: bool = True  # DCT-domain downscaling of large JPEGs (see preprocess.decode_image)
    storage: StorageOptions = field(default_factory=StorageOptions)
    progress: str = "auto"  # auto | bar | log | off
    stats: bool = True  # write <output>/stats/ after the run
    report: bool = True  # and <output>/stats/report.html (needs stats)
    gallery: int = 6  # report: highest-scoring images shown per emotion (0: none)

"""The settings of the scoring job, one typed group per concern:

- LabelOptions: what shapes the label files (columns, values, which images decode);
- EngineOptions: how the work is spread and run (actors, batches, devices, threads): never the labels;
- StorageOptions: how storage is reached (never credentials).
"""

from __future__ import annotations

from dataclasses import dataclass

#: What a run reads: image shards, or the committed shards of an output scored with --embedding (a rescore, whose
#: shards have the format EMBEDDINGS; see job/embeddings.py).
IMAGES, EMBEDDINGS = "images", "embeddings"
#: The forms of RAY_ADDRESS a run attaches to, for the line that refuses another; here, so that edge/runtime.py
#: says it without importing preflight's modules (a quarter second).
RAY_ADDRESS_FORMS = "give the head's host:port (port 6379), ray://host:10001 or auto"
#: Default ceiling on decoded pixels (width x height), against decompression bombs: 8K x 8K.
DEFAULT_MAX_PIXELS = 8192 * 8192
#: Connections an S3 client keeps open (botocore's default is 10): enough for the driver's commit threads.
S3_CONNECTIONS = 64
#: A CPU tower whose calls take less than this, an image each, runs on one thread unless --threads-per-worker says
#: otherwise: its parallel sections are too short for more threads to pay, and their spinning (or waking) takes the
#: cores the decode tasks need (benchmarks/README.md). A real tower's calls take seconds.
THREADED_TOWER_MIN_CALL_S = 0.05


@dataclass(frozen=True)
class StorageOptions:
    """How to reach object storage. Only non-secret settings: credentials come from the environment
    of whichever process touches storage (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, ...)."""

    endpoint_url: str | None = None
    #: Attempts per S3 request. botocore's "standard" retry mode retries throttling (503 SlowDown), 5xx and
    #: connection errors with exponential backoff and jitter; set here rather than left to whatever the
    #: environment's AWS config says.
    s3_attempts: int = 5
    #: Where each node keeps models fetched from object storage (None: job.fetch.DEFAULT_MODEL_CACHE).
    model_cache: str | None = None
    #: Seconds a storage call may go without an answer: the connect and read timeouts of the S3, GCS and HTTP
    #: clients, and the deadline of every call a shard's read makes (storage.Deadline). Their own defaults wait 60 s
    #: per socket read (botocore) and 5 minutes per request (aiohttp), each retried.
    io_timeout: float = 60.0

    def fsspec_options(self, protocol: str) -> dict:
        if protocol in ("s3", "s3a"):
            return self._s3_options()
        if protocol in ("gs", "gcs"):
            return {"session_kwargs": {"timeout": self._http_timeout()}}
        if protocol in ("http", "https"):
            return {"client_kwargs": {"timeout": self._http_timeout()}}
        return {}

    def _s3_options(self) -> dict:
        config = {
            "retries": {"max_attempts": self.s3_attempts, "mode": "standard"},
            "max_pool_connections": S3_CONNECTIONS,
            "connect_timeout": self.io_timeout,
            "read_timeout": self.io_timeout,
        }
        options: dict = {"config_kwargs": config}
        if self.endpoint_url:
            options["client_kwargs"] = {"endpoint_url": self.endpoint_url}
        return options

    def _http_timeout(self):
        """aiohttp's timeouts (gcsfs and fsspec's HTTP use aiohttp): no limit on a whole request, which may stream a
        large file, but on connecting and on each wait for bytes."""
        import aiohttp

        return aiohttp.ClientTimeout(total=None, connect=self.io_timeout, sock_read=self.io_timeout)


@dataclass(frozen=True)
class LabelOptions:
    """What a label file holds and how its pixels are made, besides the model."""

    meta_fields: tuple[str, ...] = ()  # fields of each sample's json copied into columns
    centered: bool = False  # <head>_centered columns
    softmax: bool = False  # <head>_softmax columns
    embedding: bool = False  # the embedding column
    exact_decode: bool = False  # decode JPEGs at full size, no DCT-domain downscaling (see decode.decode_image)
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images become error rows
    key_column: str | None = None  # Parquet shards: the column holding each sample's key
    accept_truncated: bool = False  # label what a tar that ends early holds (read.accepted_end); never recorded


@dataclass(frozen=True)
class EngineOptions:
    """How the work runs; no setting here changes a label."""

    workers: int | None = None  # inference actors; None: one per GPU, or one on a CPU-only machine
    batch_size: int = 32  # images per inference call
    decode_batch_size: int = 32  # images per decode call, and per block out of a read task
    gpus_per_worker: float = 0.0
    execution_provider: str | None = None  # cuda | tensorrt, for GPU actors only; None: cuda
    trt_precision: str | None = None  # fp16 | bf16 | fp32: the reduced precision TensorRT may use; None: fp16
    trt_cache: str | None = None  # TensorRT engine cache (default ~/.cache/emonet-batch/tensorrt on each node)
    threads_per_worker: int | None = None  # ORT intra-op threads; None: the CPUs Ray sees / workers
    wait_for_resources: float = 300.0  # seconds to wait for an autoscaler to add the nodes the actors need

"""`emonet-batch doctor`: what this machine (or every node of the cluster) has, against what a run with the given
options needs, as one table; it passes only when such a run would start.

Each node's facts are gathered by `node_facts` (on the cluster, in one Ray task per node, edge/nodes.py); the rows
and their verdicts come from the facts alone (`node_rows`, `cluster_rows`), so that every failure row can be
tested with planted facts."""

from __future__ import annotations

import os
import platform
import shutil
import socket
from dataclasses import dataclass, field, replace

from .. import __version__
from ..analysis.summary import counted
from ..errors import EmonetError, UsageError, first_line
from ..job.accelerator import (
    GPU_DEVICES,
    GPU_EXTRA,
    PROVIDERS,
    Gpus,
    distribution_version,
    driver_problem,
    find_gpus,
    install_command,
    installed_runtimes,
    major,
    probe_session,
    provider_library_problem,
    runtime_cuda_version,
    runtime_problem,
)
from ..job.config import StorageOptions
from ..job.fetch import DEFAULT_MODEL_CACHE, is_remote, local_model
from ..job.infer import DEFAULT_TRT_CACHE
from ..job.preflight import nearest_existing, s3_credential_source

OK, FAIL, NOTE = "ok", "FAIL", "-"
#: Room a TensorRT engine needs when no model says its size: about the fp16 so400m tower's weights, with margin.
TRT_CACHE_BYTES = 2 << 30
#: How long `--cluster` waits for every node's answer (a GPU node's waits for a free GPU).
NODE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class DoctorOptions:
    device: str = "cpu"  # the run's provider: cpu (no --gpus-per-worker) | cuda | tensorrt
    model: str | None = None  # a model directory or URL to fetch and verify
    storage: StorageOptions = field(default_factory=StorageOptions)
    trt_cache: str | None = None


@dataclass(frozen=True)
class NodeFacts:
    """What one machine has: plain values, so that they travel from a node's task to the driver."""

    host: str
    python: str
    versions: dict[str, str | None]  # emonet-batch, ray
    runtimes: dict[str, str]  # ONNX Runtime distributions installed
    providers: tuple[str, ...]
    build_cuda: str | None  # the CUDA version ONNX Runtime was built for
    gpus: Gpus
    libraries: dict[str, str | None]  # GPU provider -> why its library does not load (None: it loads); GPU builds
    sessions: dict[str, str | None]  # device -> why the probe session failed (None: it ran); tried devices only
    free_bytes: dict[str, tuple[str, int]]  # "model cache" / "TensorRT cache" -> (folder, bytes free)
    credentials: str | None  # where botocore found S3 credentials ("env", "iam-role", ...); never their values
    model: str | None = None  # the model: "" verified, else why it could not be fetched or verified
    model_bytes: int = 0


@dataclass(frozen=True)
class Row:
    check: str
    status: str  # OK | FAIL | NOTE
    detail: str
    node: str = ""


def node_facts(options: DoctorOptions) -> NodeFacts:
    """This machine's facts. The probe sessions run on the CPU, and on the GPU when the driver shows one."""
    gpus, build_cuda = find_gpus(), runtime_cuda_version()
    # the GPU sessions where there is a GPU: CUDA always, TensorRT when asked (it builds an engine: seconds)
    tried = ["cpu"] + (["cuda"] + (["tensorrt"] if options.device == "tensorrt" else []) if gpus.names else [])
    model_problem, model_bytes = check_model(options)
    caches = {
        "model cache": options.storage.model_cache or DEFAULT_MODEL_CACHE,
        "TensorRT cache": options.trt_cache or DEFAULT_TRT_CACHE,
    }
    return NodeFacts(
        host=socket.gethostname(),
        python=platform.python_version(),
        versions={"emonet-batch": __version__, "ray": distribution_version("ray")},
        runtimes=installed_runtimes(),
        providers=available_providers(),
        build_cuda=build_cuda,
        gpus=gpus,
        libraries={d: guarded(provider_library_problem, d) for d in GPU_DEVICES} if build_cuda else {},
        sessions={device: guarded(probe_session, device) for device in tried},
        free_bytes={name: free_space(path) for name, path in caches.items()},
        credentials=s3_credential_source(),
        model=model_problem,
        model_bytes=model_bytes,
    )


def available_providers() -> tuple[str, ...]:
    try:
        import onnxruntime

        return tuple(onnxruntime.get_available_providers())
    except Exception:  # none installed, or two overwriting each other: the runtime row says which
        return ()


def guarded(check, *args) -> str | None:
    """A check's answer, or the first line of what it raised: one broken library must not end the table."""
    try:
        return check(*args)
    except Exception as exc:
        return f"{type(exc).__name__}: {first_line(exc)}"


def free_space(path: str) -> tuple[str, int]:
    folder = nearest_existing(path)
    return path, shutil.disk_usage(folder).free


def check_model(options: DoctorOptions) -> tuple[str | None, int]:
    """Fetch (a URL, into the model cache, as a run does) and verify the model: ("", its bytes), or (why not, 0);
    (None, 0) when no model was given."""
    if not options.model:
        return None, 0
    from ..model.record import load_model_info

    try:
        directory = local_model(options.model, options.storage, options.storage.model_cache)
        info = load_model_info(directory, verify=not is_remote(options.model))
    except EmonetError as exc:
        return str(exc), 0
    except Exception as exc:  # storage errors of any backend
        return f"{type(exc).__name__}: {first_line(exc)}", 0
    return "", sum((directory / name).stat().st_size for name in info.files)


def gib(count: int) -> str:
    return f"{count / (1 << 30):.1f} GiB" if count >= 1 << 30 else f"{count / (1 << 20):.1f} MiB"


def node_rows(facts: NodeFacts, options: DoctorOptions, runs_actors: bool = True) -> list[Row]:
    """The rows of one machine. `runs_actors`: the run's inference actors may run here (on a cluster, a node
    without GPUs runs none of a GPU run's; its GPU rows are then notes)."""
    needs_gpu = options.device in GPU_DEVICES and runs_actors
    rows = [
        Row("Python", OK, facts.python),
        Row("emonet-batch", OK, facts.versions.get("emonet-batch") or "?"),
        Row("Ray", OK if facts.versions.get("ray") else FAIL, facts.versions.get("ray") or "not installed"),
        runtime_row(facts, needs_gpu),
        providers_row(facts, options.device if needs_gpu else "cpu"),
        gpus_row(facts.gpus, needs_gpu),
        driver_row(facts, needs_gpu),
        *library_rows(facts, options.device, needs_gpu),
        *session_rows(facts, options.device, needs_gpu),
        *space_rows(facts, options),
        credentials_row(facts.credentials, options.model),
    ]
    if facts.model is not None:
        detail = f"{options.model}: fetched and verified, {gib(facts.model_bytes)}" if not facts.model else facts.model
        rows.append(Row("model", FAIL if facts.model else OK, detail))
    return rows


def runtime_row(facts: NodeFacts, gpu: bool) -> Row:
    problem = runtime_problem(facts.runtimes, gpu)
    if problem:
        return Row("ONNX Runtime", FAIL, problem)
    ((name, version),) = facts.runtimes.items()
    built = f", built for CUDA {facts.build_cuda}" if facts.build_cuda else " (CPU build)"
    if gpu and not facts.build_cuda:
        fix = f"pip uninstall -y {name} && {install_command(GPU_EXTRA)}"
        return Row("ONNX Runtime", FAIL, f"{name} {version}{built}; a GPU run needs the GPU build: {fix}")
    return Row("ONNX Runtime", OK, f"{name} {version}{built}")


def providers_row(facts: NodeFacts, device: str) -> Row:
    listed = ", ".join(p.removesuffix("ExecutionProvider") for p in facts.providers) or "none"
    return Row("providers", OK if PROVIDERS[device] in facts.providers else FAIL, listed)


def gpus_row(gpus: Gpus, needed: bool) -> Row:
    if not gpus.names:
        return Row("GPUs", FAIL if needed else NOTE, f"no GPU ({gpus.reason or 'the driver shows none'})")
    names = sorted(set(gpus.names))
    return Row("GPUs", OK, f"{len(gpus.names)}: " + ", ".join(f"{gpus.names.count(n)} x {n}" for n in names))


def driver_row(facts: NodeFacts, needed: bool) -> Row:
    if not facts.gpus.names:
        return Row("CUDA driver", NOTE, "-")
    problem = driver_problem(facts.gpus, facts.build_cuda)
    if problem:
        return Row("CUDA driver", FAIL if needed else NOTE, problem)
    need = f"; ONNX Runtime needs CUDA {major(facts.build_cuda)}" if facts.build_cuda else ""
    return Row("CUDA driver", OK, f"{facts.gpus.driver}, runs CUDA up to {facts.gpus.cuda}{need}")


def library_rows(facts: NodeFacts, device: str, needed: bool) -> list[Row]:
    """Whether each GPU provider's library loads with every library it needs (the CUDA and cuDNN ones from pip, the
    driver's, TensorRT's), in the system loader's words."""
    rows = []
    for tried, problem in facts.libraries.items():
        status = OK if problem is None else FAIL if needed and tried == device else NOTE
        rows.append(Row(f"libraries ({tried})", status, problem or "load, with all they need"))
    return rows


def session_rows(facts: NodeFacts, device: str, needed: bool) -> list[Row]:
    rows = []
    for tried in ("cpu", *GPU_DEVICES):
        wanted = tried == "cpu" or (needed and tried == device)
        if tried not in facts.sessions:
            if wanted:
                rows.append(Row(f"session ({tried})", FAIL, "not tried: no GPU"))
            continue
        problem = facts.sessions[tried]
        status = OK if problem is None else FAIL if wanted else NOTE
        rows.append(Row(f"session ({tried})", status, "ran the probe graph" if problem is None else problem))
    return rows


def space_rows(facts: NodeFacts, options: DoctorOptions) -> list[Row]:
    rows = []
    for name, (path, free) in facts.free_bytes.items():
        need = 0
        if name == "TensorRT cache" and options.device == "tensorrt":
            need = max(facts.model_bytes, TRT_CACHE_BYTES)
        status = FAIL if free < need else OK if need else NOTE
        short = f"; needs {gib(need)}" if free < need else ""
        rows.append(Row(f"free space ({name})", status, f"{gib(free)} at {path}{short}"))
    return rows


def credentials_row(method: str | None, model: str | None) -> Row:
    if method:
        return Row("S3 credentials", OK, f"present (from {method})")
    needed = bool(model) and model.startswith(("s3://", "s3a://"))
    return Row("S3 credentials", FAIL if needed else NOTE, "absent (AWS_* variables, a profile or a role)")


def cluster_rows(
    driver: NodeFacts, nodes: dict[str, tuple[float, NodeFacts | Exception]], options: DoctorOptions
) -> list[Row]:
    """Every node's rows, then what holds across them: the same Python, emonet-batch and Ray as the driver, one ONNX
    Runtime version on the nodes, credentials on every node or none. `nodes`: label -> (the GPUs Ray gives the
    node, its facts or why it did not answer); a GPU run's actors run only on nodes Ray gives GPUs."""
    rows, answered = [], {}
    for label, (ray_gpus, facts) in nodes.items():
        if isinstance(facts, Exception):
            rows.append(Row("answer", FAIL, str(facts), label))
            continue
        answered[label] = facts
        runs_actors = options.device == "cpu" or ray_gpus > 0
        rows += [Row(r.check, r.status, r.detail, label) for r in node_rows(facts, options, runs_actors)]
    rows += skew_rows(driver, answered)
    rows.append(credentials_spread_row(answered))
    if options.device in GPU_DEVICES and not any(ray_gpus > 0 for ray_gpus, _ in nodes.values()):
        rows.append(
            Row("GPU nodes", NOTE, "none now: an autoscaler adds them when a run asks; their image is unchecked", "*")
        )
    return rows


def skew_rows(driver: NodeFacts, nodes: dict[str, NodeFacts]) -> list[Row]:
    """The versions that must agree: Python (major.minor), emonet-batch and Ray with the driver; ONNX Runtime among
    the nodes (the actors' labels must not depend on the node that made them)."""

    def python(facts: NodeFacts) -> str:
        return ".".join(facts.python.split(".")[:2])

    checks = {
        "Python": (python(driver), python),
        "emonet-batch": (driver.versions.get("emonet-batch"), lambda f: f.versions.get("emonet-batch")),
        "Ray": (driver.versions.get("ray"), lambda f: f.versions.get("ray")),
    }
    rows = []
    for name, (expected, of) in checks.items():
        differ = {label: of(facts) for label, facts in nodes.items() if of(facts) != expected}
        detail = "; ".join(f"{label} has {value}" for label, value in differ.items())
        rows.append(
            Row(f"same {name}", FAIL if differ else OK, f"driver has {expected}: {detail}" if differ else expected, "*")
        )
    runtimes = {label: ", ".join(f"{n} {v}" for n, v in sorted(f.runtimes.items())) for label, f in nodes.items()}
    if len(set(runtimes.values())) > 1:
        rows.append(Row("same ONNX Runtime", FAIL, "; ".join(f"{k}: {v}" for k, v in runtimes.items()), "*"))
    return rows


def credentials_spread_row(nodes: dict[str, NodeFacts]) -> Row:
    lacking = [label for label, facts in nodes.items() if not facts.credentials]
    if not lacking:
        return Row("S3 credentials everywhere", OK, f"on all {len(nodes)} nodes", "*")
    if len(lacking) == len(nodes):
        return Row("S3 credentials everywhere", NOTE, "on no node", "*")
    return Row(
        "S3 credentials everywhere", FAIL, f"absent on {len(lacking)} of {len(nodes)}: {', '.join(lacking)}", "*"
    )


def run_doctor(options: DoctorOptions, cluster: bool = False) -> tuple[list[Row], int]:
    """The table's rows and the exit code: 0 when a run with these options would start, else 1."""
    if options.device not in PROVIDERS:
        raise UsageError(f"unknown execution provider {options.device!r}; choose from {', '.join(GPU_DEVICES)}")
    if not cluster:
        rows = node_rows(node_facts(options), options)
        if os.environ.get("RAY_ADDRESS"):  # a run goes to that cluster, whose nodes this table does not show
            rows.append(
                Row("Ray cluster", NOTE, "RAY_ADDRESS is set: a run scores on that cluster; --cluster checks its nodes")
            )
    else:
        from ..edge.nodes import on_every_node
        from ..edge.runtime import ensure_ray
        from ..job.preflight import check_ray_address

        os.environ.setdefault("RAY_ADDRESS", "auto")  # the cluster this machine belongs to, as `ray status` finds it
        check_ray_address(os.environ["RAY_ADDRESS"])
        ensure_ray()
        nodes = on_every_node(node_facts, options, timeout_s=NODE_TIMEOUT_S)
        # the driver's versions, to compare the nodes with; it runs no actor and reads no model
        rows = cluster_rows(node_facts(replace(options, model=None)), nodes, options)
    return rows, 1 if any(row.status == FAIL for row in rows) else 0


def verdict(rows: list[Row], options: DoctorOptions) -> str:
    what = f"--execution-provider {options.device}" if options.device in GPU_DEVICES else "the CPU"
    failed = [f"{row.node + ': ' if row.node.strip('*') else ''}{row.check}" for row in rows if row.status == FAIL]
    if not failed:
        return f"doctor: a run on {what} would start"
    fail = "fails" if len(failed) == 1 else "fail"
    return f"doctor: a run on {what} would not start: {counted(len(failed), 'check')} {fail} ({', '.join(failed)})"

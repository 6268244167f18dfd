"""What this process's ONNX Runtime and GPUs can do: the installed ONNX Runtime distribution, the CUDA version it was
built for, the NVIDIA driver and its GPUs, whether a provider's libraries load, and a session on a tiny graph.

Used by the run's preflight (one ONNX Runtime installed), by an inference actor whose GPU provider did not load
(to say why), and by `doctor`, which shows all of it. Nothing here starts Ray or needs torch."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import first_line

#: The distributions that install the `onnxruntime` package. Two of them in one environment overwrite each other's
#: files; whichever pip wrote last decides the providers (the CPU build hides CUDA and TensorRT).
RUNTIME_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-openvino",
    "onnxruntime-directml",
    "onnxruntime-qnn",
    "onnxruntime-rocm",
    "onnxruntime-training",
)
#: The extra of this package that brings each kind of ONNX Runtime (setup.cfg).
CPU_EXTRA, GPU_EXTRA = "cpu", "gpu"
#: ONNX Runtime provider names of the devices a session can run on.
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
#: The shared library each GPU provider lives in, beside ONNX Runtime's own (Linux names).
PROVIDER_LIBRARIES = {"cuda": "libonnxruntime_providers_cuda.so", "tensorrt": "libonnxruntime_providers_tensorrt.so"}
GPU_DEVICES = tuple(PROVIDER_LIBRARIES)
PROBE_GRAPH = Path(__file__).parent / "data" / "probe.onnx"
PROBE_INPUT = "x"
PROBE_SHAPE = (1, 3, 8, 8)


def installed_runtimes() -> dict[str, str]:
    """The ONNX Runtime distributions installed here, name -> version."""
    versions = {name: distribution_version(name) for name in RUNTIME_DISTRIBUTIONS}
    return {name: version for name, version in versions.items() if version}


def distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def install_command(extra: str) -> str:
    """The pip command that installs the ONNX Runtime of `extra`, with the requirement this package declares for it
    (read from its metadata, so that it names what setup.cfg names)."""
    try:
        requirements = importlib.metadata.requires("emonet-batch") or []
    except importlib.metadata.PackageNotFoundError:  # a source tree on the path, not installed
        requirements = []
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        if spec.strip().startswith("onnxruntime") and f'extra == "{extra}"' in marker:
            return f"pip install '{spec.strip()}'"
    return f"pip install 'emonet-batch[{extra}]'"


def runtime_problem(runtimes: dict[str, str], gpu: bool) -> str | None:
    """Why the installed ONNX Runtime cannot be trusted (none, or several overwriting each other), with the command
    that fixes it; None when exactly one is installed."""
    extra = GPU_EXTRA if gpu else CPU_EXTRA
    if not runtimes:
        return f"no ONNX Runtime is installed: {install_command(extra)}"
    if len(runtimes) > 1:
        names = " and ".join(f"{name} {version}" for name, version in sorted(runtimes.items()))
        return (
            f"{names} are installed together and overwrite each other's files: "
            f"pip uninstall -y {' '.join(sorted(runtimes))} && {install_command(extra)}"
        )
    return None


def runtime_cuda_version() -> str | None:
    """The CUDA version the installed ONNX Runtime was built for ("13.0"); None for a CPU build."""
    try:
        from onnxruntime.capi import build_and_package_info
    except Exception:  # no ONNX Runtime, or a broken one: runtime_problem says which
        return None
    return getattr(build_and_package_info, "cuda_version", None) or None


def major(version: str | None) -> int | None:
    head = (version or "").split(".")[0]
    return int(head) if head.isdigit() else None


@dataclass(frozen=True)
class Gpus:
    """The NVIDIA GPUs the driver shows (whatever CUDA_VISIBLE_DEVICES says), and the CUDA version it supports."""

    names: tuple[str, ...] = ()
    driver: str | None = None  # the driver's version, e.g. "580.82.07"
    cuda: str | None = None  # the newest CUDA version the driver runs, e.g. "13.0"
    reason: str | None = None  # why none were found


def find_gpus() -> Gpus:
    """Ask the driver's management library (NVML) through nvidia-ml-py; no CUDA context is created."""
    try:
        import pynvml
    except ImportError:  # an environment installed without this package's requirements
        return Gpus(reason="nvidia-ml-py is not installed, so the driver was not asked")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        reason = "no NVIDIA driver" if isinstance(exc, pynvml.NVMLError_LibraryNotFound) else f"NVML: {exc}"
        return Gpus(reason=reason)
    try:
        count = pynvml.nvmlDeviceGetCount()
        names = tuple(_text(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count))
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()  # e.g. 13000 for 13.0
        return Gpus(names, _text(pynvml.nvmlSystemGetDriverVersion()), f"{cuda // 1000}.{cuda % 1000 // 10}")
    except pynvml.NVMLError as exc:
        return Gpus(reason=f"NVML: {exc}")
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def driver_problem(gpus: Gpus, build_cuda: str | None) -> str | None:
    """The driver is too old for the CUDA major ONNX Runtime was built for (CUDA runs on a driver of its own major
    or newer, not older)."""
    have, need = major(gpus.cuda), major(build_cuda)
    if have is None or need is None or have >= need:
        return None
    return (
        f"the NVIDIA driver {gpus.driver} runs CUDA up to {gpus.cuda}, and this ONNX Runtime was built for CUDA "
        f"{build_cuda}: install a driver for CUDA {need} or newer"
    )


def load_gpu_libraries() -> None:
    """Load the CUDA and cuDNN libraries that the GPU install brings from pip (onnxruntime-gpu's `cuda` and `cudnn`
    extras): ONNX Runtime's provider finds them only on the library path unless they are loaded first, which
    its own preload_dlls does. Its lines about libraries it could not load are dropped: provider_library_problem
    names the one that matters."""
    import onnxruntime

    preload = getattr(onnxruntime, "preload_dlls", None)
    if preload is None or runtime_cuda_version() is None:
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
        preload()


def provider_library_problem(device: str) -> str | None:
    """Why the library of `device`'s provider does not load, in the system loader's own words, which name the
    missing library (e.g. "libcublasLt.so.13: cannot open shared object file"); None when it loads."""
    if device not in PROVIDER_LIBRARIES or not sys.platform.startswith("linux"):
        return None
    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    library = capi / PROVIDER_LIBRARIES[device]
    if not library.exists():
        return f"this ONNX Runtime has no {PROVIDERS[device]} (the CPU build?): {install_command(GPU_EXTRA)}"
    load_gpu_libraries()
    try:
        ctypes.CDLL(str(capi / "libonnxruntime_providers_shared.so"), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(library))
    except OSError as exc:
        return f"{library.name} does not load: {first_line(exc)}"
    return None


def gpu_problem(device: str) -> str | None:
    """Why ONNX Runtime cannot run `device` (cuda | tensorrt) in this process, the first cause found, checked in the
    order a fix must follow: the installed runtime, its build, the GPUs, the driver, the provider's libraries."""
    problem = runtime_problem(installed_runtimes(), gpu=True)
    if problem:
        return problem
    build_cuda = runtime_cuda_version()
    if build_cuda is None:
        return f"the installed ONNX Runtime is the CPU build: {install_command(GPU_EXTRA)}"
    gpus = find_gpus()
    if not gpus.names:
        return f"no GPU: {gpus.reason or 'the driver shows none'}"
    return driver_problem(gpus, build_cuda) or provider_library_problem(device)


def probe_session(device: str) -> str | None:
    """Open a session on the probe graph with `device`'s provider (and the CPU's behind it) and run it once: None
    when `device`'s provider ran it, else why not."""
    import onnxruntime as ort

    provider = PROVIDERS[device]
    if provider not in ort.get_available_providers():
        return gpu_problem(device) or f"this ONNX Runtime has no {provider}"
    if device != "cpu":
        load_gpu_libraries()
    providers = list(dict.fromkeys([provider, PROVIDERS["cpu"]]))
    try:
        session = ort.InferenceSession(str(PROBE_GRAPH), providers=providers)
        session.run(None, {PROBE_INPUT: np.ones(PROBE_SHAPE, np.float32)})
    except Exception as exc:  # ORT raises its own types, or a RuntimeError from a provider
        return first_line(exc)
    if provider not in session.get_providers():
        return gpu_problem(device) or f"ONNX Runtime loaded its {provider} but could not start it on this GPU"
    return None

"""Stream a Ray Data plan's result batches out to the driver; a failed pipeline is one PipelineError."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import ray

from ..errors import PipelineError


def result_batches(dataset) -> Iterator[pa.Table]:
    """The plan's output blocks as they are produced (any size)."""
    try:
        yield from dataset.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=1)
    except ray.exceptions.RayError as exc:
        raise PipelineError(f"the pipeline failed: {root_cause(exc)}") from None


def stage_stats(dataset) -> str:
    """Ray Data's per-stage figures of a finished plan ("" when Ray cannot give them)."""
    try:
        return dataset.stats()
    except Exception:  # stats are a nicety; never fail a finished run over them
        return ""


def root_cause(exc: BaseException) -> str:
    """The innermost error's type and its message's last line: Ray wraps stage errors in several layers and
    puts the remote traceback before the message."""
    while getattr(exc, "cause", None) is not None or exc.__cause__ is not None:
        exc = getattr(exc, "cause", None) or exc.__cause__
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:500]

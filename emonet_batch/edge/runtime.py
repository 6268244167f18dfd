"""Start or attach to Ray."""

from __future__ import annotations

import logging
import os

import ray

#: The embedded runtime's object store: enough for a few hundred decoded 384px images in flight.
EMBEDDED_OBJECT_STORE_BYTES = 1 << 30


def ensure_ray(verbose: bool = False) -> bool:
    """Attach to RAY_ADDRESS when set (and return True: a cluster, which an autoscaler may grow); otherwise start a
    local runtime sized to this machine (False).

    Quiet unless `verbose`: Ray's own Python loggers (`ray`, `ray.data`) report errors only, through the
    logging level ray.init documents, and workers' output stays in Ray's log directory (log_to_driver), so
    a run prints our lines; `--verbose` shows Ray's warnings and the workers' logs."""
    level = logging.INFO if verbose else logging.ERROR
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(logging_level=level, log_to_driver=verbose)
        else:
            ray.init(
                # "local": a fresh runtime even when a `ray start` cluster runs on this machine (RAY_ADDRESS attaches)
                address="local",
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                object_store_memory=EMBEDDED_OBJECT_STORE_BYTES,
                logging_level=level,
                configure_logging=True,
                log_to_driver=verbose,
            )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # our own progress display replaces Ray's bars
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(level)
    return bool(os.environ.get("RAY_ADDRESS"))

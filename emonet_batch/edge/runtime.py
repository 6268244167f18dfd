"""Start or attach to Ray."""

from __future__ import annotations

import logging
import os

import ray

#: The embedded runtime's object store: enough for a few hundred decoded 384px images in flight.
EMBEDDED_OBJECT_STORE_BYTES = 1 << 30


def ensure_ray() -> None:
    """Attach to RAY_ADDRESS when set; otherwise start a local runtime sized to this machine."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=logging.WARNING)
    else:
        ray.init(
            # "local": a fresh runtime even when a `ray start` cluster runs on this machine (attach via RAY_ADDRESS)
            address="local",
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            object_store_memory=EMBEDDED_OBJECT_STORE_BYTES,
            logging_level=logging.WARNING,
            configure_logging=True,
            log_to_driver=False,
        )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # our own progress display replaces Ray's bars
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)

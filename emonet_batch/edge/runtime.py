"""Start or attach to Ray."""

from __future__ import annotations

import logging
import os

import ray

from ..errors import UsageError, first_line
from ..job.config import RAY_ADDRESS_FORMS

#: The embedded runtime's object store: enough for a few hundred decoded 384px images in flight.
EMBEDDED_OBJECT_STORE_BYTES = 1 << 30

#: Ray settings of the embedded runtime, each shortening its start-up (benchmarks/README.md has the figures):
#: - the raylet connects to its own object store while the store's thread may not listen yet, and retried after
#:   Ray's default 1 s; 100 attempts 100 ms apart keep Ray's 10 s;
#: - Ray starts one worker process per CPU when the driver connects and holds the connection until they run; here
#:   they start as the plan asks for them instead (Ray Data's helper actors, the inference actor, the read task).
EMBEDDED_SYSTEM_CONFIG = {
    "raylet_client_connect_timeout_milliseconds": 100,
    "raylet_client_num_connect_attempts": 100,
    "prestart_worker_first_driver": False,
}

#: No task events in the embedded runtime: they feed the dashboard and the state API (`ray list tasks`), which a
#: runtime started without a dashboard and gone when the run ends never shows; every worker reported them every
#: second, and the driver flushed them at shutdown. Ray's documented switch is this variable (the
#: driver reads it from its environment, not from the system config), set unless the user set it.
TASK_EVENTS_INTERVAL_VARIABLE = "RAY_task_events_report_interval_ms"


def ensure_ray(verbose: bool = False) -> bool:
    """Attach to RAY_ADDRESS when set (and return True: a cluster, which an autoscaler may grow); otherwise start a
    local runtime sized to this machine (False).

    Quiet unless `verbose`: Ray's own Python loggers (`ray`, `ray.data`) report errors only, through the
    logging level ray.init documents, and workers' output stays in Ray's log directory (log_to_driver), so
    a run prints our lines; `--verbose` shows Ray's warnings and the workers' logs."""
    level = logging.INFO if verbose else logging.ERROR
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            attach(os.environ["RAY_ADDRESS"], level, verbose)
        else:
            os.environ.setdefault(TASK_EVENTS_INTERVAL_VARIABLE, "0")
            ray.init(
                # "local": a fresh runtime even when a `ray start` cluster runs on this machine (RAY_ADDRESS attaches)
                address="local",
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                object_store_memory=EMBEDDED_OBJECT_STORE_BYTES,
                logging_level=level,
                configure_logging=True,
                log_to_driver=verbose,
                _system_config=EMBEDDED_SYSTEM_CONFIG,
            )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # our own progress display replaces Ray's bars
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(level)
    return bool(os.environ.get("RAY_ADDRESS"))


def attach(address: str, level: int, verbose: bool) -> None:
    """Connect to the cluster at `address` (preflight.check_ray_address has seen its port answer), or say in one
    line why Ray could not (e.g. `auto` with no cluster on this machine, a cluster that refused its token)."""
    try:
        ray.init(logging_level=level, log_to_driver=verbose)
    except ConnectionError as exc:
        raise UsageError(
            f"RAY_ADDRESS={address}: {first_line(exc)} (start a cluster with `ray start --head`, or unset "
            "RAY_ADDRESS to run on a Ray of this run's own)"
        ) from None
    except ValueError as exc:  # an address Ray cannot parse that preflight.check_ray_address let through
        raise UsageError(
            f"RAY_ADDRESS={address} is no Ray cluster address ({first_line(exc)}); {RAY_ADDRESS_FORMS}"
        ) from None


def stop_ray() -> None:
    """Stop (or detach from) Ray, in about a third of the time ray.shutdown alone takes for a runtime this process
    started: its autoscaler monitor is stopped first. Ray stops the cluster's store (GCS) before the monitor, whose
    SIGTERM handler then reports its end to that store and hangs until Ray's 1 s grace runs out; an embedded
    single-node runtime's monitor has nothing to keep. Ray offers no public switch for either (the monitor cannot
    be left out of ray.init), so this uses the node handle's own kill_monitor when it exists."""
    node = getattr(ray._private.worker, "_global_node", None)
    if node is not None and node.head and hasattr(node, "kill_monitor"):
        node.kill_monitor(check_alive=False)
    ray.shutdown()

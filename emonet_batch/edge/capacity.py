"""Capacity: the cluster has what the inference actors and read tasks need, or the autoscaler is asked for it.

A cluster whose GPU (or CPU) workers start at zero has none until the autoscaler adds them, and the autoscaler adds
nodes for demand it sees. Ray Data's actor pool would wait for its actors silently and forever, so before the plan
starts the job asks for the resources itself (Ray's `request_resources`) and waits for them, up to
`--wait-for-resources` seconds, saying so on the progress line. It stops at once, in one line, when the autoscaler
reports that no node type can provide them, and when the runtime is one this process started (no autoscaler
could add a node to it).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import ray

from ..errors import UsageError
from ..job.config import EngineOptions

#: How often the cluster's resources are read while waiting.
POLL_S = 1.0
#: How often a waiting run logs a line in log mode (the live line shows every poll).
LOG_EVERY_S = 10.0


def needed_bundles(engine: EngineOptions) -> list[dict[str, float]]:
    """What the plan cannot start without: every GPU actor's share (one actor when --workers is not given), or for
    CPU runs one CPU for the read and assembly tasks (CPU actors hold no slot)."""
    if engine.gpus_per_worker > 0:
        return [{"GPU": engine.gpus_per_worker}] * (engine.workers or 1)
    return [{"CPU": 1.0}]


def shortfall(bundles: list[dict[str, float]], available: dict[str, float]) -> dict[str, float]:
    """Resource -> how much the cluster lacks of the bundles' total (empty when it has enough)."""
    total: Counter = Counter()
    for bundle in bundles:
        total.update(bundle)
    return {
        name: amount - available.get(name, 0.0) for name, amount in total.items() if available.get(name, 0.0) < amount
    }


def describe(amounts: dict[str, float]) -> str:
    return ", ".join(f"{amount:g} {name}" for name, amount in sorted(amounts.items()))


def ensure_capacity(
    bundles: list[dict[str, float]], wait_s: float, attached: bool, show: Callable[[str, bool], None]
) -> None:
    """Return once the cluster holds `bundles`; ask the autoscaler and wait up to `wait_s` seconds when it does not.
    `attached`: the runtime is a cluster this process attached to (RAY_ADDRESS), not one it started.
    `show(text, logged)`: the progress line."""
    missing = shortfall(bundles, ray.cluster_resources())
    if not missing:
        return
    lacking = f"the Ray cluster lacks {describe(missing)} for this run"
    if not attached:
        raise UsageError(
            f"{lacking} and this machine's own Ray runtime cannot grow; leave out --gpus-per-worker to "
            "run on CPU, or attach to a cluster with RAY_ADDRESS"
        )
    if wait_s <= 0:
        raise UsageError(f"{lacking} (--wait-for-resources 0: not waiting for the autoscaler)")
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=bundles)
    started, logged = time.monotonic(), -LOG_EVERY_S
    try:
        while missing:
            waited = time.monotonic() - started
            state = autoscaler_state()
            infeasible = [bundle for bundle in (state.infeasible if state else []) if bundle in bundles]
            if infeasible:
                raise UsageError(
                    f"{lacking}, and the autoscaler has no node type that provides {describe(infeasible[0])}: "
                    "add one to the cluster's node types, or ask for less (--gpus-per-worker, --workers)"
                )
            if waited >= wait_s:
                raise UsageError(
                    f"{lacking}: no node brought it within --wait-for-resources {wait_s:g} s; `ray status` on the "
                    "cluster shows what the autoscaler is doing (node types, quotas, failed launches)"
                )
            log = waited - logged >= LOG_EVERY_S
            # A cluster has one resource request, and the latest call replaces it: Ray Data's coordinator actor,
            # left on the cluster by any earlier Ray Data run, sends its own every 20 s. So the request is made
            # again while it is not the cluster's, keeping what the others asked for (the v2 autoscaler's state
            # says what is requested; with v1 it is asked again every LOG_EVERY_S).
            if (state is not None and not contains(state.requested, bundles)) or (state is None and log):
                request_resources(bundles=(state.requested if state else []) + bundles)
            show(f"waiting for the autoscaler to add {describe(missing)} ({waited:.0f} of {wait_s:g} s)", log)
            logged = waited if log else logged
            time.sleep(POLL_S)
            missing = shortfall(bundles, ray.cluster_resources())
    except BaseException:
        # a run that does not go ahead leaves no demand of its own behind
        state = autoscaler_state()
        request_resources(bundles=without(state.requested, bundles) if state else [])
        raise


@dataclass(frozen=True)
class AutoscalerState:
    """What the v2 autoscaler reports: the cluster's resource request (every requester's bundles, one per unit) and
    the bundles of it that none of its node types can hold."""

    requested: list[dict[str, float]]
    infeasible: list[dict[str, float]]


def autoscaler_state() -> AutoscalerState | None:
    """The v2 autoscaler's state, or None where there is none to read (a v1 autoscaler only logs what it cannot
    provide, so there a run waits out --wait-for-resources). The GCS reply is read whole here because the parsed
    form of Ray's v2 SDK (`get_cluster_status`) leaves the infeasible requests out."""
    from ray._raylet import GcsClient
    from ray.core.generated.autoscaler_pb2 import GetClusterStatusReply

    reply = GetClusterStatusReply()
    try:
        reply.ParseFromString(GcsClient(ray.get_runtime_context().gcs_address).get_cluster_status(timeout_s=5))
    except Exception:  # an older GCS, or none answering: nothing known
        return None
    if not reply.HasField("autoscaling_state"):  # no v2 autoscaler reports to this cluster
        return None
    return AutoscalerState(
        unrolled(reply.cluster_resource_state.cluster_resource_constraints),
        unrolled(reply.autoscaling_state.infeasible_cluster_resource_constraints),
    )


def unrolled(constraints) -> list[dict[str, float]]:
    """Cluster resource constraints as bundles, one per unit counted."""
    return [
        dict(counted.request.resources_bundle)
        for constraint in constraints
        for counted in constraint.resource_requests
        for _ in range(counted.count)
    ]


def contains(bundles: list[dict[str, float]], wanted: list[dict[str, float]]) -> bool:
    """Whether `bundles` hold every bundle of `wanted` (as many times as it is wanted)."""
    return len(without(bundles, wanted)) == len(bundles) - len(wanted)


def without(bundles: list[dict[str, float]], taken: list[dict[str, float]]) -> list[dict[str, float]]:
    """`bundles` less one of each bundle of `taken` they hold."""
    remaining = list(bundles)
    for bundle in taken:
        if bundle in remaining:
            remaining.remove(bundle)
    return remaining

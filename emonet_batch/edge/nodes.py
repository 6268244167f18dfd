"""One task on every node of the cluster, pinned to it: how `doctor --cluster` asks each node what it has."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .stream import root_cause


class NodeDidNotAnswer(Exception):
    """A node's task failed or did not finish in time."""


def alive_nodes() -> list[dict[str, Any]]:
    return [node for node in ray.nodes() if node.get("Alive")]


def node_label(node: dict[str, Any]) -> str:
    """The node's address and the end of its id (two nodes may share an address: containers on one host)."""
    return f"{node['NodeManagerAddress']} ({node['NodeID'][-8:]})"


def on_every_node(function: Callable, *args, timeout_s: float) -> dict[str, tuple[float, Any]]:
    """`function(*args)` on every alive node, one task each: node label -> (the GPUs Ray gives the node, the task's
    result or NodeDidNotAnswer). A task on a node with GPUs holds one of them, so that it sees a GPU as an inference
    actor does (Ray hides the GPUs from a task that holds none); it waits while every GPU there is busy, up to
    `timeout_s`."""
    remote = ray.remote(function)
    pending, gpus = {}, {}
    for node in alive_nodes():
        label = node_label(node)
        gpus[label] = node["Resources"].get("GPU", 0.0)
        pending[label] = remote.options(
            num_cpus=0,
            num_gpus=1 if gpus[label] >= 1 else 0,
            max_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
        ).remote(*args)
    ready, _ = ray.wait(list(pending.values()), num_returns=len(pending), timeout=timeout_s)
    answers = {}
    for label, ref in pending.items():
        if ref not in ready:
            ray.cancel(ref, force=True)
            answers[label] = gpus[label], NodeDidNotAnswer(f"did not answer within {timeout_s:.0f} s (every GPU busy?)")
            continue
        try:
            answers[label] = gpus[label], ray.get(ref)
        except ray.exceptions.RayError as exc:
            answers[label] = gpus[label], NodeDidNotAnswer(root_cause(exc))
    return answers

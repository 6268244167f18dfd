"""The assembly of whole shards on the workers: one Ray task per shard reads the shard's pieces and stages its files
(job/commit.assemble_shard); the driver submits it and gets back the outcome and the files' hashes, never rows.

A task leaves its shard's pieces in place: when its node is lost before the result reaches the driver, Ray runs
it again, and it must find them. The driver names the pieces of the assemblies whose results it holds to the next
task it submits, which removes them; the run's end removes the last ones with its staging."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import ray

from ..errors import first_line
from ..job.commit import ShardOutcome, StagedShard, assemble_shard
from ..job.config import LabelOptions, StorageOptions
from ..job.inputs import Shard
from ..job.pieces import PieceRef, remove_pieces
from ..job.rows import FAILED, ShardEnd
from ..job.storage import filesystem
from ..model.record import ModelInfo
from .stream import root_cause

#: A CPU slot per assembly, so that Ray runs it in a worker it already has (a task without one may need a new
#: worker process, seconds of start-up on a small node) and spreads the work over the nodes as it frees cores.
ASSEMBLY_CPUS = 1
#: Assemblies in flight per CPU of the cluster (at least one each way): enough to keep up with shards finishing
#: on every node, few enough that the reads keep their cores.
IN_FLIGHT_PER_CPU = 0.25


@dataclass(frozen=True)
class AssemblyContext:
    """What every assembly of a run shares (put in the object store once)."""

    output: str
    storage: StorageOptions
    info: ModelInfo
    labels: LabelOptions
    attempt: str


def _assemble(context: AssemblyContext, shard: Shard, pieces: list[PieceRef], end: ShardEnd, spent: list[PieceRef]):
    """Remove the `spent` pieces of shards assembled before, then assemble `shard`."""
    started = time.thread_time()
    fs, output = filesystem(context.output, context.storage)
    remove_pieces(fs, output, spent)
    staged = assemble_shard(fs, output, shard, pieces, end, context.info, context.labels, context.attempt)
    return staged, time.thread_time() - started


class ShardAssembly:
    """Assembles whole shards on the cluster, a bounded number at a time, in the order they became whole."""

    def __init__(self, context: AssemblyContext):
        self.context = ray.put(context)
        self.task = ray.remote(_assemble).options(num_cpus=ASSEMBLY_CPUS, scheduling_strategy="SPREAD")
        self.limit = max(1, int(ray.cluster_resources().get("CPU", 1) * IN_FLIGHT_PER_CPU))
        self.waiting: deque[tuple[Shard, list[PieceRef], ShardEnd]] = deque()
        self.running: dict[ray.ObjectRef, tuple[Shard, ShardEnd, list[PieceRef]]] = {}
        self.spent: list[PieceRef] = []  # pieces of assemblies the driver has the results of
        self.cpu_seconds = 0.0

    def submit(self, shard: Shard, pieces: list[PieceRef], end: ShardEnd) -> None:
        self.waiting.append((shard, pieces, end))
        self._start()

    def pending(self) -> bool:
        return bool(self.waiting or self.running)

    def finished(self, wait: bool = False) -> list[tuple[Shard, StagedShard]]:
        """The assemblies done since the last call (with `wait`, at least one when any is pending)."""
        if not self.running:
            return []
        if wait:
            ray.wait(list(self.running), num_returns=1)
        done, _ = ray.wait(list(self.running), num_returns=len(self.running), timeout=0)
        results = [self._result(ref) for ref in done]
        self._start()
        return results

    def _result(self, ref) -> tuple[Shard, StagedShard]:
        shard, end, pieces = self.running.pop(ref)
        try:
            staged, seconds = ray.get(ref)
        except ray.exceptions.RayError as exc:
            reason = f"the assembly of its files failed: {first_line(root_cause(exc))}"
            return shard, StagedShard(ShardOutcome(shard.shard_id, shard.display_url, FAILED, end.count, reason=reason))
        self.cpu_seconds += seconds
        self.spent += pieces
        return shard, staged

    def _start(self) -> None:
        while self.waiting and len(self.running) < self.limit:
            shard, pieces, end = self.waiting.popleft()
            spent, self.spent = self.spent, []
            self.running[self.task.remote(self.context, shard, pieces, end, spent)] = shard, end, pieces

"""The driver's commits: each assembled shard's create-only record and the move of its files into place, several
shards at a time, with a commit checkpoint every so many commits (job/commitlog.checkpoint_interval)."""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from ..errors import first_line
from ..job.commit import ShardOutcome, StagedShard, commit_staged
from ..job.commitlog import checkpoint_interval, write_checkpoint
from ..job.inputs import Shard
from ..job.storage import OutOfSpace, StorageError
from .progress import Counters

#: Shards committed at once. A commit is a few requests in a row (log entry, record, a copy and a delete per
#: file), each waiting on the store's latency, not the driver's CPU: one at a time, an object store's tens of
#: milliseconds per request would cap a run at a few shards a second. Within the S3 client's connections.
COMMIT_THREADS = 32


class Committer:
    """Commits assembled shards on `threads` threads and records their outcomes as they finish. Shards are
    independent: each has its own record, and the record decides which run's files are published."""

    def __init__(
        self,
        fs,
        output: str,
        attempt: str,
        outcomes: dict[str, ShardOutcome],
        counters: Counters,
        threads: int = COMMIT_THREADS,
    ):
        self.fs, self.output, self.attempt = fs, output, attempt
        self.outcomes, self.counters = outcomes, counters
        self.checkpoint_every = checkpoint_interval(len(outcomes))  # the shards found committed
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="commit")
        self.running: set[Future] = set()
        self.warnings: list[str] = []
        self.cpu_seconds = 0.0  # the driver's CPU in the commit threads
        self.output_full: str | None = None  # why, once staging or a commit found the output full

    def submit(self, staged_shards: list[tuple[Shard, StagedShard]]) -> None:
        for shard, staged in staged_shards:
            if staged.output_full:
                self.output_full = staged.outcome.reason
            self.running.add(self.pool.submit(self._commit, shard, staged))

    def collect(self, wait_for_one: bool = False) -> None:
        """Record the commits done so far (with `wait_for_one`, at least one when any runs); a failure other than
        the storage's, a bug, is raised here."""
        done, self.running = wait(self.running, timeout=None if wait_for_one else 0, return_when=FIRST_COMPLETED)
        before = self.counters.shards_done // self.checkpoint_every
        self._record(done)
        if self.counters.shards_done // self.checkpoint_every > before:
            # with no commit under way, so that every record the checkpoint takes in is published
            self._record(self._drain())
            self.warnings.extend(try_checkpoint(self.fs, self.output))

    def close(self) -> None:
        """Wait for every commit under way and record it (also when the run failed: what is committed counts)."""
        try:
            self._record(self._drain())
        finally:
            self.pool.shutdown()

    def _drain(self) -> set[Future]:
        running, self.running = self.running, set()
        return wait(running).done

    def _record(self, done: set[Future]) -> None:
        """The outcomes of `done`, each recorded; then the first bug among them raised."""
        bugs = []
        for future in done:
            if future.exception():
                bugs.append(future.exception())
                continue
            outcome, seconds = future.result()
            self.outcomes[outcome.shard] = outcome
            self.cpu_seconds += seconds
            self.counters.shards_done += 1
            self.counters.errors += outcome.errors
        if bugs:
            raise bugs[0]

    def _commit(self, shard: Shard, staged: StagedShard) -> tuple[ShardOutcome, float]:
        started = time.thread_time()
        try:
            outcome = commit_staged(self.fs, self.output, shard, staged, self.attempt)
        except StorageError as exc:  # this shard is not committed; the run goes on, and says so in the manifest
            if isinstance(exc, OutOfSpace):
                self.output_full = f"commit failed: {exc}"
            outcome = ShardOutcome(
                shard.shard_id, shard.display_url, "failed", staged.outcome.samples, reason=f"commit failed: {exc}"
            )
        return outcome, time.thread_time() - started


def try_checkpoint(fs, output: str) -> list[str]:
    """A commit checkpoint; a failure costs the next resume its reads only: a warning, never the run. A record
    created while it is written is safe: job/commitlog.py keeps recent log entries for the next reader to check."""
    try:
        write_checkpoint(fs, output)
    except (OSError, StorageError) as exc:
        return [f"a commit checkpoint was not written ({first_line(exc)}); the next run reads more records"]
    return []

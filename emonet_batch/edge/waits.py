"""Which shards' reads wait on storage, for the run's live line.

A read task's storage calls go through job.storage.Deadline, which lists in its process (storage.WAITING) a call
that has waited over STALL_NOTICE_S. A thread in each read task's process sends that list to a small named actor,
the run's board, when it changes; the driver polls the board. The board is created by the first process with a
stall to report (a run without stalls starts no actor) and removed by the driver at the end of the run.
"""

from __future__ import annotations

import os
import threading
import time

import ray

from ..job.storage import WAITING

#: How often a read process looks at its waiting calls, and the driver at the board.
POLL_S = 1.0


def board_name(attempt: str) -> str:
    return f"emonet-batch-storage-waits-{attempt}"


@ray.remote(num_cpus=0)
class WaitBoard:
    def __init__(self):
        self.by_process: dict[str, dict[str, float]] = {}

    def report(self, process: str, waiting: dict[str, float]) -> None:
        self.by_process[process] = waiting

    def waiting(self) -> dict[str, float]:
        """Shard id -> since when (epoch seconds) a call of its read has been waiting."""
        return {shard: since for waiting in self.by_process.values() for shard, since in waiting.items()}


_reporters: set[str] = set()
_lock = threading.Lock()


def report_waits(name: str) -> None:
    """Start, once per process and board, the thread that sends this process's waiting reads to the board."""
    with _lock:
        if name in _reporters:
            return
        _reporters.add(name)
    threading.Thread(target=_report, args=(name,), daemon=True, name="storage-waits").start()


def _report(name: str) -> None:
    process, sent, board = f"{os.uname().nodename}:{os.getpid()}", {}, None
    while True:
        time.sleep(POLL_S)
        waiting = dict(WAITING)
        if waiting == sent:
            continue
        try:
            if board is None:
                board = WaitBoard.options(name=name, get_if_exists=True, lifetime="detached").remote()
            board.report.remote(process, waiting)
            sent = waiting
        except Exception:  # the board is a display aid: a failed report is tried again at the next change
            board = None


class WaitWatcher:
    """On the driver: keeps `counters.waiting` up to date from the board, and removes the board at the end."""

    def __init__(self, name: str, counters):
        self.name, self.counters, self.board = name, counters, None
        self._stop = threading.Event()
        threading.Thread(target=self._watch, daemon=True, name="storage-waits").start()

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.board = self.board or ray.get_actor(self.name)
                self.counters.waiting = ray.get(self.board.waiting.remote(), timeout=10)
            except Exception:  # no board yet (no stall so far), or it could not answer now
                pass

    def close(self) -> None:
        self._stop.set()
        self.counters.waiting = {}
        try:
            ray.kill(self.board or ray.get_actor(self.name))
        except Exception:  # none was created
            pass

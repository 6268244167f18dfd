"""Live progress for the operator: a one-line display on a terminal, periodic log lines otherwise
(Ray job logs, CI), nothing with progress="off"."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field


@dataclass
class Counters:
    total_shards: int = 0
    skipped: int = 0
    shards_done: int = 0
    images: int = 0
    errors: int = 0
    images_by_worker: dict[str, int] = field(default_factory=dict)  # host:pid:gpu=... -> images scored
    started: float = field(default_factory=time.perf_counter)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def rate(self) -> float:
        return self.images / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        return (
            f"images {self.images} ({self.rate:.1f}/s) | shards {self.shards_done + self.skipped}/{self.total_shards} "
            f"done ({self.skipped} skipped) | errors {self.errors} | {self.elapsed:.0f} s"
        )


class Progress:
    """Call `update()` as work lands; `close()` once."""

    def __init__(self, counters: Counters, mode: str = "auto", log_every: float = 10.0, stream=None):
        self.counters = counters
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "log"
        self.mode = mode
        self.log_every = log_every
        self._last = time.perf_counter()  # the first log line comes after log_every, not at once
        self._live = None
        if mode == "bar":
            from rich.console import Console
            from rich.live import Live

            self._live = Live(counters.line(), console=Console(file=self.stream), refresh_per_second=4, transient=True)
            self._live.start()

    def update(self) -> None:
        if self._live is not None:
            self._live.update(self.counters.line())
        elif self.mode == "log" and time.perf_counter() - self._last >= self.log_every:
            self._last = time.perf_counter()
            print(f"emonet-batch: {self.counters.line()}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
        elif self.mode == "log":
            print(f"emonet-batch: finished: {self.counters.line()}", file=self.stream, flush=True)

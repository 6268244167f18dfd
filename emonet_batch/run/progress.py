"""Live progress for the operator: a one-line display on a terminal, periodic log lines otherwise
(Ray job logs, CI), nothing with progress="off".

The display is redrawn from the counters by a clock of its own (rich's refresh on a terminal, a timer thread
in log mode), so the elapsed time and the rate move while no batch arrives. Images count as they come out of
inference; shards count when committed."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field

#: Seconds between two log lines (progress "log").
LOG_EVERY_S = 10.0
#: Shards named on the live line as waiting on storage.
WAITING_SHOWN = 3


@dataclass
class Counters:
    total_shards: int = 0
    skipped: int = 0
    shards_done: int = 0
    scored: int = 0  # sample rows out of inference so far
    errors: int = 0  # error rows in committed shards
    images_by_worker: dict[str, int] = field(default_factory=dict)  # host:pid:gpu=... -> images scored
    phase: str = "starting"
    started: float = field(default_factory=time.perf_counter)
    first_batch_s: float | None = None  # seconds from the start to the first scored batch
    scoring_s: float = 0.0  # seconds from the first scored batch to the end of the stream
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # CPU seconds by stage (read, decode, ...)
    waiting: dict[str, float] = field(default_factory=dict)  # shard -> since when its read waits on storage (epoch)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def rate(self) -> float:
        return self.scored / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        return (
            f"images {self.scored} scored ({self.rate:.1f}/s) | shards {self.shards_done + self.skipped}/"
            f"{self.total_shards} committed ({self.skipped} skipped) | errors {self.errors} | {self.elapsed:.0f} s"
            + self.waiting_part()
        )

    def waiting_part(self) -> str:
        """The shards whose read waits on storage, longest first."""
        if not self.waiting:
            return ""
        now, longest = time.time(), sorted(self.waiting.items(), key=lambda item: item[1])
        named = ", ".join(f"{shard} ({now - since:.0f} s)" for shard, since in longest[:WAITING_SHOWN])
        more = f" and {len(longest) - WAITING_SHOWN} more" if len(longest) > WAITING_SHOWN else ""
        return f" | waiting on storage: {named}{more}"


class Progress:
    """`phase(text)` as the run moves on, `finished()` when scoring is over, `close()` once. The counters are
    read here, never written."""

    def __init__(self, counters: Counters, mode: str = "auto", log_every: float | None = None, stream=None):
        self.counters = counters
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "log"
        self.mode = mode
        self._live = None
        self._stop = threading.Event()
        if mode == "bar":
            from rich.console import Console
            from rich.live import Live
            from rich.text import Text

            self._live = Live(
                # one line, cut to the terminal's width: a wrapped line would be redrawn as two
                get_renderable=lambda: Text(f"{counters.phase}: {counters.line()}", no_wrap=True, overflow="ellipsis"),
                console=Console(file=self.stream),
                refresh_per_second=4,
                transient=True,
            )
            self._live.start()
        elif mode == "log":
            threading.Thread(target=self._log_every, args=(log_every or LOG_EVERY_S,), daemon=True).start()

    def phase(self, text: str, logged: bool = True) -> None:
        """Show what the run does now. `logged=False` for the quick checks before Ray starts: a log stays one
        line when one of them fails (the live line on a terminal shows every phase)."""
        self.counters.phase = text
        if self.mode == "log" and logged:
            self._print(text)

    def _log_every(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            self._print(self.counters.line())

    def _print(self, text: str) -> None:
        print(f"emonet-batch: {text}", file=self.stream, flush=True)

    def finished(self) -> None:
        """Scoring is over: log mode says how it went."""
        self._stop.set()
        if self.mode == "log":
            self._print(f"finished: {self.counters.line()}")

    def close(self) -> None:
        self._stop.set()
        if self._live is not None:
            self._live.stop()

"""Ray Data's own start-up floor: the embedded runtime exactly as `score` starts it, then the smallest plan of the
same shape (one read task, one actor, one batch), with nothing of emonet-batch in it. scripts/bench.py runs it as
a fresh process next to `score` so the two start-ups compare within one run: what `score` takes beyond this is
ours to cut, the rest is Ray's.

Run as `python -m emonet_batch.devtools.ray_floor`; prints {"first_batch_s": ...}, seconds from this module's
start (before Ray is imported) to the first batch, as the manifest's `startup_s` counts from the run's start.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import json  # noqa: E402  (after the clock starts: imports are part of the start-up measured)

import ray  # noqa: E402

from ..edge.runtime import ensure_ray, stop_ray  # noqa: E402

ROWS = 8  # the benchmark's one shard of 8 images


class PassThrough:
    """The actor: returns its batch (what a model would score)."""

    def __call__(self, batch):
        return batch


def first_batch_seconds() -> float:
    ensure_ray()
    dataset = ray.data.range(ROWS, override_num_blocks=1).map_batches(
        PassThrough, batch_size=ROWS, compute=ray.data.ActorPoolStrategy(size=1)
    )
    next(iter(dataset.iter_batches(batch_size=None)))
    return time.perf_counter() - STARTED


def main() -> None:
    seconds = first_batch_seconds()
    stop_ray()
    print(json.dumps({"first_batch_s": round(seconds, 3)}))


if __name__ == "__main__":
    main()

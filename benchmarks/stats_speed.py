"""Wall time of `emonet-batch stats` on a generated label set in the job's output layout.

    python benchmarks/stats_speed.py [--rows 100000] [--shards 100]

Writes random label files (44 float32 heads, top emotion, gender/age/ethnicity metadata) and commit records
into a temporary output, runs the stats stage, prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from emonet_batch.analysis.stats import compute_stats
from emonet_batch.taxonomy import EMOTIONS, HEAD_COLUMNS


def write_label_set(output: Path, rows: int, shards: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (output / "labels").mkdir(parents=True)
    (output / "_commits").mkdir()
    per_shard = rows // shards
    for s in range(shards):
        scores = rng.normal(1.0, 1.5, size=(per_shard, len(HEAD_COLUMNS))).astype(np.float32)
        columns = {"key": [f"{s:05d}-{i:06d}" for i in range(per_shard)], "shard": [f"shard-{s:05d}"] * per_shard}
        columns.update({head: scores[:, h] for h, head in enumerate(HEAD_COLUMNS)})
        columns["top_emotion"] = [EMOTIONS[i] for i in np.argmax(scores[:, :40], axis=1)]
        columns["top_prob"] = np.full(per_shard, 0.1, np.float32)
        columns["gender"] = rng.choice(["female", "male"], per_shard)
        columns["age"] = rng.integers(18, 80, per_shard)
        columns["ethnicity"] = rng.choice(
            ["african", "east_asian", "european", "latin_american", "south_asian"], per_shard
        )
        pq.write_table(pa.table(columns), output / "labels" / f"shard-{s:05d}.parquet")
        (output / "_commits" / f"shard-{s:05d}.json").write_text(
            json.dumps({"shard": f"shard-{s:05d}", "samples": per_shard})
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        write_label_set(Path(work), args.rows, args.shards)
        started = time.perf_counter()
        stats = compute_stats(work)
        wall = time.perf_counter() - started
    print(
        json.dumps(
            {
                "rows": stats["run"]["label_rows"],
                "shards": args.shards,
                "stats_wall_s": round(wall, 2),
                "rows_per_s": round(stats["run"]["label_rows"] / wall),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

"""The read stage as one Ray Data datasource over any source (job/sources.py): one task per shard, streaming the
blocks the source reads, each with the model's input as a tensor column.

Reading and decoding inside the read task keeps a shard's raw image bytes out of Ray's object store (they were
copied in and out once more, and held a separate decode operator to a share of Ray Data's CPU budget that left cores
idle). A task streams its shard in blocks, so parallelism comes from the shards: give at least as many shards as the
cluster has cores for decoding.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from ..job.inputs import Shard
from ..job.sources import Source
from .blocks import block_schema, with_input
from .waits import report_waits


def read_blocks(shard: Shard, source: Source, waits: str) -> Iterator[pa.Table]:
    report_waits(waits)
    for rows, inputs in source.read(shard):
        yield with_input(rows, source, inputs)


class ShardDatasource(Datasource):
    """One read task per shard, each reading its blocks through `source` (which holds no list of shards, so each
    task carries only its own) and reporting its waits on storage to the board named `waits` (waits.py)."""

    def __init__(self, shards: list[Shard], source: Source, waits: str):
        self.shards, self.source, self.waits = shards, source, waits
        self.schema = block_schema(source)

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context=None
    ) -> list[ReadTask]:
        return [
            ReadTask(
                partial(read_blocks, shard, self.source, self.waits),
                BlockMetadata(num_rows=None, size_bytes=None, input_files=[shard.display_url], exec_stats=None),
                schema=self.schema,
            )
            for shard in self.shards
        ]

    def get_name(self) -> str:
        return f"Read{type(self.source).__name__}"

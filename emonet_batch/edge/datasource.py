"""The read stage as a Ray Data datasource: one read task per shard, each streaming Arrow blocks of rows."""

from __future__ import annotations

from functools import partial

from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from ..job.config import StorageOptions
from ..job.inputs import Shard
from ..job.read import row_blocks
from ..job.rows import READ_SCHEMA


class ShardDatasource(Datasource):
    def __init__(self, shards: list[Shard], storage: StorageOptions, rows_per_block: int, key_column: str | None):
        self.shards = shards
        self.storage = storage
        self.rows_per_block = rows_per_block
        self.key_column = key_column

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context=None
    ) -> list[ReadTask]:
        return [
            ReadTask(
                partial(row_blocks, shard, self.storage, self.rows_per_block, self.key_column),
                BlockMetadata(num_rows=None, size_bytes=None, input_files=[shard.display_url], exec_stats=None),
                schema=READ_SCHEMA,
            )
            for shard in self.shards
        ]

    def get_name(self) -> str:
        return "ReadShards"

"""The read and decode stages as one Ray Data datasource: one task per shard, streaming blocks of decoded rows
(and a rescore's read of stored embeddings, job/embeddings.py, on the same datasource).

Decoding inside the read task keeps a shard's raw image bytes out of Ray's object store (they were copied in
and out once more, and held a separate decode operator to a share of Ray Data's CPU budget that left cores
idle). A task streams its shard in blocks of `rows_per_block` rows, so parallelism comes from the shards:
give at least as many shards as the cluster has cores for decoding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from ..job.config import StorageOptions
from ..job.decode import decode_batch
from ..job.embeddings import EmbeddingSource, stored_rows
from ..job.inputs import Shard
from ..job.read import row_blocks
from ..job.rows import EMBEDDING
from .blocks import decoded_schema, embedding_schema, to_arrow, to_block


@dataclass(frozen=True)
class Decoding:
    """How a read task decodes (decode.decode_batch's options)."""

    size: int
    resize_filter: str
    max_pixels: int
    fast: bool


def decoded_blocks(
    shard: Shard, storage: StorageOptions, rows_per_block: int, key_column: str | None, decoding: Decoding
) -> Iterator[pa.Table]:
    """A shard's rows, `rows_per_block` at a time, decoded (pixels instead of image bytes)."""
    for block in row_blocks(shard, storage, rows_per_block, key_column):
        columns = {name: block.column(name).to_numpy(zero_copy_only=False) for name in block.column_names}
        yield to_block(decode_batch(columns, decoding.size, decoding.resize_filter, decoding.max_pixels, decoding.fast))


def embedding_blocks(
    shard: Shard, source: EmbeddingSource, storage: StorageOptions, rows_per_block: int
) -> Iterator[pa.Table]:
    """A rescore's shard: the source's committed rows, `rows_per_block` at a time, with their embeddings."""
    for rows, embedding in stored_rows(source, shard.shard_id, storage, rows_per_block):
        yield rows.append_column(EMBEDDING, to_arrow(EMBEDDING, embedding))


def image_datasource(
    shards: list[Shard], storage: StorageOptions, rows_per_block: int, key_column: str | None, decoding: Decoding
) -> ShardDatasource:
    read = partial(
        decoded_blocks, storage=storage, rows_per_block=rows_per_block, key_column=key_column, decoding=decoding
    )
    return ShardDatasource(shards, read, decoded_schema(decoding.size), "ReadDecodeShards")


def embedding_datasource(
    shards: list[Shard], source: EmbeddingSource, storage: StorageOptions, rows_per_block: int
) -> ShardDatasource:
    read = partial(embedding_blocks, source=source, storage=storage, rows_per_block=rows_per_block)
    return ShardDatasource(shards, read, embedding_schema(source.dim), "ReadEmbeddings")


class ShardDatasource(Datasource):
    """One read task per shard, each running `read(shard)` (a picklable function) for its blocks."""

    def __init__(self, shards: list[Shard], read: Callable[[Shard], Iterator[pa.Table]], schema: pa.Schema, name: str):
        self.shards = shards
        self.read = read
        self.schema = schema
        self.name = name

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context=None
    ) -> list[ReadTask]:
        return [
            ReadTask(
                partial(self.read, shard),
                BlockMetadata(num_rows=None, size_bytes=None, input_files=[shard.display_url], exec_stats=None),
                schema=self.schema,
            )
            for shard in self.shards
        ]

    def get_name(self) -> str:
        return self.name

"""What a run reads, behind one interface (`Source`): image shards (`ImageSource`, read and decoded here) or the
stored embeddings of a scored output (`EmbeddingSource`, job/embeddings.py). The run opens one at its start
(`open_source`); no other module asks which it is. A third kind of input (a table of image URLs, say) is one more
class with these methods and one more entry in SOURCES.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from ..errors import UsageError
from ..model.record import ModelInfo
from .config import EMBEDDINGS, IMAGES, EngineOptions, LabelOptions, StorageOptions
from .decode import DECODE_COLUMNS, decode_batch
from .embeddings import EmbeddingSource, open_embeddings
from .inputs import Shard, expand_inputs
from .preflight import check_inputs, check_key_column
from .read import row_blocks
from .rows import DECODE_CPU, PIXELS, READ_SCHEMA, typed_rows


class Source(Protocol):
    """One kind of input. A source is sent to every read task: it holds settings, never the list of its shards."""

    #: The column the model reads (its rows carry it beside the row protocol's columns).
    input_column: str

    @staticmethod
    def check_model(info: ModelInfo, model: str) -> None:
        """Refuse, in one line, a model that cannot read this kind of input (before any input is listed)."""

    def labels(self, labels: LabelOptions) -> LabelOptions:
        """The label options a run over this input uses (a rescore takes its source's)."""

    def check(self, shards: list[Shard]) -> list[Shard]:
        """Check the shards before the run starts (and before --overwrite removes anything); the shards left out
        (found by listing, but no input of this kind: preflight.left_out_warning names them)."""

    def manifest_fields(self) -> dict[str, Any]:
        """What the manifest records of this input besides its shards."""

    def row_schema(self) -> pa.Schema:
        """The columns of the rows `read` gives, without the model's input."""

    def input_example(self) -> np.ndarray:
        """The model's input for one row (its type and shape)."""

    def read(self, shard: Shard) -> Iterator[tuple[pa.Table, np.ndarray]]:
        """A shard's rows, a block at a time, with the model's input of each row (zeros or NaN where a row is
        no sample); never an exception for a bad shard or sample: those become error rows or a failed end."""


@dataclass(frozen=True)
class ImageSource:
    """WebDataset or Parquet shards of images, each read and decoded in blocks of `rows_per_block`."""

    storage: StorageOptions
    rows_per_block: int
    key_column: str | None
    size: int
    resize_filter: str
    max_pixels: int
    fast: bool
    accept_truncated: bool = False
    meta_fields: tuple[str, ...] = ()  # Parquet's nested columns are metadata only when named
    input_column: str = PIXELS

    @staticmethod
    def check_model(info: ModelInfo, model: str) -> None:
        if info.heads_only:
            raise UsageError(
                f"model {model} is heads-only (its input is the tower's embedding, not images); score images "
                "with a full export, or rescore the stored embeddings of an output with `emonet-batch rescore`"
            )

    def labels(self, labels: LabelOptions) -> LabelOptions:
        return labels

    def check(self, shards: list[Shard]) -> list[Shard]:
        return check_inputs(shards, self.storage, self.key_column, self.meta_fields)

    def manifest_fields(self) -> dict[str, Any]:
        return {}

    def row_schema(self) -> pa.Schema:
        kept = [f for f in READ_SCHEMA if f.name not in DECODE_COLUMNS.drops]
        return pa.schema([*kept, pa.field(DECODE_CPU, pa.float64())])

    def input_example(self) -> np.ndarray:
        return np.zeros((self.size, self.size, 3), np.uint8)

    def read(self, shard: Shard) -> Iterator[tuple[pa.Table, np.ndarray]]:
        blocks = row_blocks(
            shard, self.storage, self.rows_per_block, self.key_column, self.accept_truncated, self.meta_fields
        )
        for block in blocks:
            columns = {name: block.column(name).to_numpy(zero_copy_only=False) for name in block.column_names}
            decoded = decode_batch(columns, self.size, self.resize_filter, self.max_pixels, self.fast)
            pixels = decoded.pop(PIXELS)
            yield typed_rows(decoded), pixels


def open_images(
    inputs: tuple[str, ...], output: str, info: ModelInfo, labels: LabelOptions, engine: EngineOptions,
    storage: StorageOptions,
) -> tuple[ImageSource, list[Shard]]:  # fmt: skip
    source = ImageSource(
        storage,
        engine.decode_batch_size,
        labels.key_column,
        info.image_size,
        info.resize_filter,
        labels.max_pixels,
        fast=not labels.exact_decode,
        accept_truncated=labels.accept_truncated,
        meta_fields=labels.meta_fields,
    )
    shards = expand_inputs(inputs, storage, output)
    check_key_column(shards, labels.key_column)
    return source, shards


def open_stored_embeddings(
    inputs: tuple[str, ...], output: str, info: ModelInfo, labels: LabelOptions, engine: EngineOptions,
    storage: StorageOptions,
) -> tuple[EmbeddingSource, list[Shard]]:  # fmt: skip
    # no decode: a read block is one model batch of stored embeddings (a few MB)
    return open_embeddings(inputs[0], output, info, storage, rows_per_block=engine.batch_size)


#: Each kind of input (ScoreConfig.reads): its class, and how a run opens it.
SOURCES = {IMAGES: (ImageSource, open_images), EMBEDDINGS: (EmbeddingSource, open_stored_embeddings)}


def open_source(
    reads: str, inputs: tuple[str, ...], output: str, model: str, info: ModelInfo, labels: LabelOptions,
    engine: EngineOptions, storage: StorageOptions,
) -> tuple[Source, list[Shard]]:  # fmt: skip
    """The source a run reads and its shards, in input order; first, a model that cannot read it is refused."""
    kind, opener = SOURCES[reads]
    kind.check_model(info, model)
    return opener(inputs, output, info, labels, engine, storage)

"""Stage outputs as Arrow blocks with the row protocol's types.

Left to infer types from numpy, Ray Data gives a column the type its values happen to have in that batch: a batch
of samples only has an all-null `status` (type null) and a `count` of NaNs (double), the next one an `end` row
with a string and an int64, and joining two such blocks into one batch fails ("Unable to merge"). Small blocks
(see plan.BLOCK_BYTES) make such batches common, so every stage's output is typed here: the protocol's columns
with READ_SCHEMA's types, arrays of more than one dimension (pixels, scores, embeddings) as Ray's tensor columns.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from ray.data.extensions import ArrowTensorArray

from ..job.rows import CPU_COLUMNS, EMBEDDING, PIXELS, READ_SCHEMA, STAGE_COLUMNS, WORKER

#: Arrow types of the row columns (tensor columns are typed by their arrays).
ROW_TYPES = (
    {field.name: field.type for field in READ_SCHEMA}
    | {WORKER: pa.string()}
    | {name: pa.float64() for name in CPU_COLUMNS.values()}
)


def to_block(batch: dict[str, np.ndarray]) -> pa.Table:
    """A stage's numpy output as an Arrow table: row columns with their protocol types (NaN and None as null),
    tensors as tensor columns without a copy per row."""
    return pa.table({name: to_arrow(name, values) for name, values in batch.items()})


def to_arrow(name: str, values: np.ndarray) -> pa.Array:
    if name in ROW_TYPES:
        return pa.array(values, type=ROW_TYPES[name], from_pandas=True)
    return ArrowTensorArray.from_numpy(np.ascontiguousarray(values))


def decoded_schema(size: int) -> pa.Schema:
    """The schema of the read+decode stage's blocks for `size` px images."""
    pixels = np.zeros((1, size, size, 3), np.uint8)
    return model_input_schema(PIXELS, pixels, (pa.field(CPU_COLUMNS["decode"], pa.float64()),))


def embedding_schema(dim: int) -> pa.Schema:
    """The schema of a rescore's read blocks: stored `dim`-d embeddings where score has pixels."""
    return model_input_schema(EMBEDDING, np.zeros((1, dim), np.float32))


def model_input_schema(name: str, example: np.ndarray, extra: tuple[pa.Field, ...] = ()) -> pa.Schema:
    """The read stage's columns without the image bytes, the model's input `name` typed like `example`, `extra`."""
    kept = [f for f in READ_SCHEMA if f.name not in STAGE_COLUMNS["decode"]["drops"]]
    return pa.schema([*kept, pa.field(name, ArrowTensorArray.from_numpy(example).type), *extra])

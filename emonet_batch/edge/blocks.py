"""The model's inputs as Ray's tensor columns beside the row protocol's columns (typed in job/rows.typed_rows)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from ray.data.extensions import ArrowTensorArray

from ..job.sources import Source


def tensor_column(values: np.ndarray) -> pa.Array:
    """An array of more than one dimension as a tensor column, without a copy per row."""
    return ArrowTensorArray.from_numpy(np.ascontiguousarray(values))


def block_schema(source: Source) -> pa.Schema:
    """The schema of the read stage's blocks: the source's row columns and its model input."""
    example = tensor_column(source.input_example()[np.newaxis])
    return pa.schema([*source.row_schema(), pa.field(source.input_column, example.type)])


def with_input(rows: pa.Table, source: Source, inputs: np.ndarray) -> pa.Table:
    return rows.append_column(source.input_column, tensor_column(inputs))

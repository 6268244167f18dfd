"""The row protocol: what each stage takes and gives, checked when the plan is built. No Ray."""

import numpy as np
import pytest

from emonet_batch.job.config import StorageOptions
from emonet_batch.job.inputs import Shard
from emonet_batch.job.rows import (
    END,
    ERROR,
    READ_SCHEMA,
    SAMPLE,
)


def test_each_stage_adds_and_drops_the_columns_it_declares(model, tmp_path):
    """read -> decode -> infer on one shard without Ray, checked against each stage's StageColumns."""
    import socket

    from emonet_batch.devtools.shards import write_shards
    from emonet_batch.job.decode import DECODE_COLUMNS, decode_batch
    from emonet_batch.job.infer import InferStage, SessionOptions, infer_columns
    from emonet_batch.job.read import row_blocks

    from ..shardkit import odd_samples

    (path,) = write_shards(odd_samples()[:3], tmp_path, 3)
    block = next(row_blocks(Shard(str(path), "s", "tar"), StorageOptions(), rows_per_block=64))
    assert block.column_names == READ_SCHEMA.names
    read = {name: block.column(name).to_numpy(zero_copy_only=False) for name in block.column_names}
    decoded = decode_batch(dict(read), model.image_size, model.resize_filter, 10**8, True)
    assert set(decoded) == set(read) - set(DECODE_COLUMNS.drops) | set(DECODE_COLUMNS.gives)
    stage = InferStage(str(model.directory), SessionOptions(), True, True, socket.gethostname())
    inferred = {name: values for name, values in decoded.items() if name != "pixels"}
    inferred.update(stage.outputs(decoded["kind"] == SAMPLE, decoded["pixels"]))
    declared = infer_columns(model, with_embedding=True)
    assert set(inferred) == set(decoded) - set(declared.drops) | set(declared.gives)
    assert list(inferred["kind"]) == [SAMPLE, ERROR, ERROR, END]  # good, corrupt (decode), zero bytes (decode), end
    assert np.isfinite(inferred["scores"][0]).all() and np.isnan(inferred["scores"][1:]).all()


def test_stages_that_do_not_fit_fail_when_the_plan_is_built(model):
    from emonet_batch.errors import EmonetError
    from emonet_batch.job.infer import infer_columns
    from emonet_batch.job.rows import check_stages, piece_columns
    from emonet_batch.job.sources import ImageSource

    source = ImageSource(StorageOptions(), 32, None, model.image_size, model.resize_filter, 10**8, True)
    given = [*source.row_schema().names, source.input_column]
    stages = [("infer", infer_columns(model, with_embedding=False)), ("pieces", piece_columns(with_embedding=True))]
    with pytest.raises(EmonetError, match="pieces takes embedding, given by no stage before"):
        check_stages(given, stages)
    stages[1] = ("pieces", piece_columns(with_embedding=False))
    assert {"scores", "worker", "key"} <= check_stages(given, stages)
    with pytest.raises(EmonetError, match="infer takes pixels"):
        check_stages([name for name in given if name != "pixels"], stages)

"""Model records that cannot be used are refused in one line. No Ray, no torch."""

import json

import fsspec
import pytest

from emonet_batch.errors import ModelError
from emonet_batch.job.config import StorageOptions
from emonet_batch.job.fetch import local_model
from emonet_batch.model.record import load_model_info


def test_a_record_that_is_not_a_json_object_is_refused(tmp_path):
    (tmp_path / "model.json").write_text("[1, 2]")
    with pytest.raises(ModelError) as raised:
        load_model_info(tmp_path)
    assert str(raised.value) == f"{tmp_path}/model.json: malformed model record (TypeError: a JSON list, not an object)"


@pytest.mark.parametrize("name", ["../escaped.onnx", "/tmp/escaped.onnx", "sub/model.onnx", "..", "model.json"])
def test_a_fetched_record_cannot_write_outside_its_cache_entry(tmp_path, name):
    """Where a model fetched from a URL lands is decided by the file names its record lists."""
    store = fsspec.filesystem("memory")
    store.pipe_file("/models/odd/model.json", json.dumps({"files": {name: "0" * 64}}).encode())
    cache = tmp_path / "cache" / "models"
    with pytest.raises(ModelError) as raised:
        local_model("memory://models/odd", StorageOptions(), str(cache))
    assert str(raised.value) == (
        f"cannot read model.json of the model memory://models/odd: the recorded file {name!r} is not a plain file "
        "name of the model's directory"
    )
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []

import json
import shutil
from pathlib import Path

import pytest
import torch

from emonet_batch.errors import ModelError, UsageError
from emonet_batch.export.checkpoint import load_encoder, load_heads, read_resize_filter
from emonet_batch.export.synthetic import TOWERS, write_encoder, write_heads
from emonet_batch.taxonomy import HEAD_COLUMNS

pytestmark = pytest.mark.torch
IN_DIM = 16


@pytest.fixture(scope="module")
def head_dirs(tmp_path_factory):
    dirs = {}
    for size in ("small", "large"):
        dirs[size] = tmp_path_factory.mktemp(size)
        write_heads(dirs[size], IN_DIM, size)
    return dirs


@pytest.fixture
def small_heads(head_dirs, tmp_path):
    target = tmp_path / "heads"
    shutil.copytree(head_dirs["small"], target)
    return target


@pytest.mark.parametrize("size,widths", [("small", [128, 32, 1]), ("large", [1024, 512, 256, 1])])
def test_detects_head_size_from_shapes(head_dirs, size, widths):
    heads = load_heads(head_dirs[size])
    assert heads.head_size == size and heads.in_dim == IN_DIM
    assert heads.columns == list(HEAD_COLUMNS)
    assert [linear.out_features for linear in heads.modules[0].linears] == widths
    assert not heads.modules[0].training


def test_released_file_layout(head_dirs):
    state = torch.load(head_dirs["small"] / "model_jealousy_&_envy_best.pth", weights_only=True)
    assert sorted(state) == [f"layers.{i}.{p}" for i in (0, 3, 6) for p in ("bias", "weight")]


def test_state_dict_wrapper_and_module_prefix(small_heads):
    path = small_heads / "model_anger_best.pth"
    state = torch.load(path, weights_only=True)
    torch.save({"state_dict": state, "epoch": 3}, path)
    prefixed = small_heads / "model_fear_best.pth"
    torch.save({f"module.{k}": v for k, v in torch.load(prefixed, weights_only=True).items()}, prefixed)
    heads = load_heads(small_heads, ["anger", "fear"])
    torch.testing.assert_close(heads.modules[0].layers[0].weight, state["layers.0.weight"])


def test_file_names_match_case_insensitively(small_heads):
    (small_heads / "model_pleasure_ecstasy_best.pth").rename(small_heads / "Model_Pleasure_Ecstasy_Best.PTH")
    heads = load_heads(small_heads)
    assert "pleasure_ecstasy" in heads.columns and len(heads.columns) == 44


def test_any_subset_by_name_in_the_order_asked(small_heads):
    heads = load_heads(small_heads, ["valence", "amusement"])
    assert heads.columns == ["valence", "amusement"]
    for column in ("valence", "arousal", "dominance", "emotional_vulnerability"):
        (small_heads / f"model_{column}_best.pth").unlink()
    assert len(load_heads(small_heads).columns) == 40


def test_missing_head_names_the_file(small_heads):
    (small_heads / "model_jealousy_&_envy_best.pth").unlink()
    with pytest.raises(ModelError, match=r"model_jealousy_&_envy_best\.pth"):
        load_heads(small_heads, ["anger", "jealousy_envy"])


def test_heads_asked_by_a_wrong_name_are_a_usage_error_with_a_hint(small_heads):
    with pytest.raises(UsageError, match="unknown heads: happiness; heads are named as their label columns"):
        load_heads(small_heads, ["happiness"])
    with pytest.raises(UsageError) as raised:
        load_heads(small_heads, ["anger", "Valence", "happiness"])
    assert str(raised.value) == (
        "unknown heads: Valence, happiness; did you mean valence for Valence? heads are named as their label columns "
        "(amusement, elation, pleasure_ecstasy, ... 44 in all)"
    )
    with pytest.raises(UsageError, match="^--only-heads names no head$"):
        load_heads(small_heads, [])


def test_corrupt_file_names_the_file(small_heads):
    (small_heads / "model_sadness_best.pth").write_bytes(b"\x80\x04 definitely not a checkpoint")
    with pytest.raises(ModelError, match=r"model_sadness_best\.pth: not a readable head checkpoint"):
        load_heads(small_heads)


def test_wrong_shape_names_the_file(small_heads):
    path = small_heads / "model_awe_best.pth"
    state = torch.load(path, weights_only=True)
    state["layers.3.weight"] = torch.zeros(32, 100)
    torch.save(state, path)
    with pytest.raises(ModelError, match=r"model_awe_best\.pth: does not fit the small head layout"):
        load_heads(small_heads)
    torch.save({"layers.0.weight": torch.zeros(7, IN_DIM), "layers.0.bias": torch.zeros(7)}, path)
    with pytest.raises(ModelError, match=r"model_awe_best\.pth: layer shapes match neither"):
        load_heads(small_heads)


def test_mixed_sizes_are_refused(small_heads, head_dirs):
    shutil.copy(head_dirs["large"] / "model_awe_best.pth", small_heads / "model_awe_best.pth")
    with pytest.raises(ModelError, match="mix Small and Large"):
        load_heads(small_heads)


def test_missing_directory(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_heads(tmp_path / "nope")
    with pytest.raises(ModelError, match="no head files"):
        load_heads(tmp_path)


@pytest.mark.parametrize("full_model", [False, True])
def test_encoder_loads_from_full_or_vision_checkpoints(tmp_path, full_model):
    torch.manual_seed(0)
    write_encoder(tmp_path, TOWERS["tiny"], full_model)
    encoder = load_encoder(tmp_path)
    assert (encoder.image_size, encoder.width, encoder.resize_filter) == (64, 64, "bilinear")
    pooled = encoder.model(pixel_values=torch.zeros(1, 3, 64, 64)).pooler_output
    assert pooled.shape == (1, 64)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == (
        "siglip" if full_model else "siglip_vision_model"
    )


def test_encoder_errors(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        load_encoder(tmp_path)
    for damaged, message in (("[1]", "config.json: not a JSON object"), ("{half", "config.json: not JSON \\(")):
        (tmp_path / "config.json").write_text(damaged)
        with pytest.raises(ModelError, match=message):
            load_encoder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "siglip2"}))
    with pytest.raises(ModelError, match="NaFlex"):
        load_encoder(tmp_path)
    assert read_resize_filter(tmp_path) == "bilinear"


def test_a_tower_without_its_pooling_head_is_refused_and_an_absent_flag_means_the_head(tmp_path):
    write_encoder(tmp_path, TOWERS["tiny"], full_model=False)
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "vision_use_head": False}))
    with pytest.raises(ModelError, match="no attention-pool head"):
        load_encoder(tmp_path, weights=False)
    config.pop("vision_use_head", None)  # as transformers releases without the flag write it
    config_path.write_text(json.dumps(config))
    assert load_encoder(tmp_path, weights=False).width == 64


class _Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def plant_pickle(path, marker):
    import pickle

    path.write_bytes(pickle.dumps({"layers.0.weight": _Payload(marker)}))


def test_planted_pickles_never_run(small_heads, tmp_path):
    marker = tmp_path / "marker"
    plant_pickle(small_heads / "model_amusement_best.pth", marker)
    with pytest.raises(ModelError, match="not a readable head checkpoint") as refused:
        load_heads(small_heads)
    assert "weights_only" not in str(refused.value) and not marker.exists()
    encoder = tmp_path / "encoder"
    write_encoder(encoder, TOWERS["tiny"], False)
    for weights in encoder.glob("*.safetensors"):
        weights.unlink()
    plant_pickle(encoder / "pytorch_model.bin", marker)
    with pytest.raises(ModelError, match="no .safetensors weights") as refused:
        load_encoder(encoder)
    assert "weights_only" not in str(refused.value) and not marker.exists()

"""The default pipeline's error (fast JPEG decode and precision together), recorded by the export and applied by
score."""

import torch

from emonet_batch.analysis.summary import model_info_table
from emonet_batch.export import ExportConfig, export_model
from emonet_batch.export.synthetic import write_synthetic_checkpoint
from emonet_batch.model.accuracy import MAX_SCORE_ERROR, fast_decode_problems
from emonet_batch.model.record import load_model_info
from emonet_batch.run.config import score_config
from emonet_batch.run.score import choose_decode


def sensitive_heads(directory, gain: float) -> None:
    """Scale each head's last layer: the same shapes and parity, `gain` times the sensitivity to its input."""
    for path in directory.glob("*.pth"):
        state = torch.load(path, weights_only=True)
        last = max((key for key in state if key.endswith(".weight")), key=lambda key: int(key.split(".")[1]))
        state[last] *= gain
        torch.save(state, path)


def test_the_fast_decode_is_used_only_while_it_keeps_the_model_within_the_limits(tiny_models, tmp_path):
    calm = load_model_info(tiny_models["small"])
    measured = calm.record["decode_parity"]
    assert measured["source_sizes"] == [512, 768, 1024, 1536] and measured["fast"]["images"] == 16
    assert measured["exact"]["max_abs_score_diff"] < 1e-4 < measured["fast"]["max_abs_score_diff"] < MAX_SCORE_ERROR
    config = score_config(["in.tar"], str(tmp_path / "out"), str(tiny_models["small"]))
    assert choose_decode(calm, config) == (config, [])
    assert "within the limits" in model_info_table(calm)

    encoder, heads = write_synthetic_checkpoint(tmp_path / "checkpoint", "tiny", "small", seed=7)
    sensitive_heads(heads, gain=30)
    exported = export_model(ExportConfig(out=tmp_path / "sensitive", encoder=str(encoder), heads=str(heads)))
    sensitive = load_model_info(exported.directory)
    assert exported.parity.max_abs_score_diff < 1e-4  # the graph itself is exact
    assert fast_decode_problems(sensitive.record), sensitive.record["decode_parity"]
    chosen, note = choose_decode(sensitive, config)
    assert chosen.labels.exact_decode and note[0].startswith("decoding JPEGs at full size (--exact-decode)")
    assert "over the limits: score decodes exactly" in model_info_table(sensitive)
    print(
        "fast-decode error, tiny small heads: "
        f"{measured['fast']['max_abs_score_diff']:.3g}; x30 heads: "
        f"{sensitive.record['decode_parity']['fast']['max_abs_score_diff']:.3g}"
    )

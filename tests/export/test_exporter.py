import json
import shutil

import numpy as np
import onnx
import pytest

from emonet_batch.cli import main
from emonet_batch.errors import ModelError, UsageError
from emonet_batch.export import ExportConfig, export_model
from emonet_batch.export.graph import save_onnx
from emonet_batch.export.synthetic import write_synthetic_checkpoint
from emonet_batch.job.infer import OnnxScorer
from emonet_batch.model.record import FORMAT_VERSION, load_model_info
from emonet_batch.postprocess import packaged_neutral_means
from emonet_batch.taxonomy import HEAD_COLUMNS

from ..shardkit import assert_scores_independent_of_the_batch

pytestmark = pytest.mark.torch  # every test here exports a model


@pytest.mark.parametrize("size", ["small", "large"])
def test_tiny_export_parity_and_record(tiny_models, size):
    info = load_model_info(tiny_models[size])
    record = info.record
    assert record["parity"]["max_abs_score_diff"] <= 1e-4
    assert record["parity"]["embedding_cosine_min"] > 0.99999
    assert record["parity"]["images"] >= 3
    assert info.heads == HEAD_COLUMNS
    assert (info.head_size, info.image_size, info.embedding_dim) == (size, 64, 64)
    assert info.normalize is True and info.resize_filter == "bilinear" and info.precision == "fp32"
    assert info.neutral_means == packaged_neutral_means()
    assert set(info.files) == {"model.onnx", "model.onnx.data", "tower.onnx", "heads.onnx"}
    sources = record["sources"]["sha256"]
    assert {f"heads/model_{c}_best.pth" for c in ("amusement", "jealousy_&_envy", "valence")} <= set(sources)
    assert {"encoder/config.json", "encoder/model.safetensors", "encoder/preprocessor_config.json"} <= set(sources)
    assert {"torch", "transformers", "onnx", "onnxruntime", "emonet_batch"} <= set(record["versions"])


def test_graph_interface_and_metadata(tiny_models):
    graph = onnx.load(str(tiny_models["large"] / "model.onnx"))
    (pixels,) = graph.graph.input
    assert pixels.name == "pixels"
    assert pixels.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = pixels.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [64, 64, 3]
    assert [o.name for o in graph.graph.output] == ["scores", "embedding"]
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in graph.graph.output)
    assert max(op.version for op in graph.opset_import if op.domain in ("", "ai.onnx")) >= 17
    props = {p.key: json.loads(p.value) for p in graph.metadata_props}
    assert props["emonet_batch.heads"] == list(HEAD_COLUMNS)
    assert props["emonet_batch.image_size"] == 64
    assert props["emonet_batch.normalize"] is True
    assert props["emonet_batch.resize_filter"] == "bilinear"


def test_dynamic_batch_gives_the_same_rows(tiny_models):
    scorer = OnnxScorer(load_model_info(tiny_models["small"]))
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 64, 64, 3), dtype=np.uint8)
    scores, embedding = scorer.run(pixels)
    assert scores.shape == (5, 44) and embedding.shape == (5, 64) and scores.dtype == np.float32
    one, _ = scorer.run(pixels[3:4])
    np.testing.assert_allclose(one[0], scores[3], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        scorer.run(pixels.astype(np.float32))


def count_products(model_dir):
    return sum(node.op_type in ("MatMul", "Gemm") for node in onnx.load(str(model_dir / "model.onnx")).graph.node)


def test_heads_are_batched_not_one_subgraph_each(tiny_models, tmp_path):
    two = export_model(
        ExportConfig(out=tmp_path, synthetic="tiny", head_size="large", seed=7, only_heads=("anger", "valence"))
    )
    assert two.record["heads"] == ["anger", "valence"]
    # the number of matrix products does not grow with the number of heads
    assert count_products(tiny_models["large"]) == count_products(two.directory)


def test_loading_verifies_sha256(tiny_models, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_models["small"], copy, ignore=shutil.ignore_patterns("checkpoint"))
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # in the weights
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the recorded"):
        load_model_info(copy)
    assert load_model_info(copy, verify=False).heads == HEAD_COLUMNS
    (copy / "model.onnx").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model_info(copy)


def copy_model(source, target):
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoint"))
    return target


def edit_record(directory, **changes):
    record = json.loads((directory / "model.json").read_text())
    (directory / "model.json").write_text(json.dumps({**record, **changes}))


def test_onnx_metadata_is_read_without_the_onnx_package(tiny_models):
    from emonet_batch.model.record import onnx_metadata

    graph = onnx.load(str(tiny_models["small"] / "model.onnx"))
    assert onnx_metadata(tiny_models["small"] / "model.onnx") == {p.key: p.value for p in graph.metadata_props}


def test_heads_reordered_in_model_json_are_refused(tiny_models, tmp_path):
    model = copy_model(tiny_models["small"], tmp_path / "model")
    heads = list(HEAD_COLUMNS)
    edit_record(model, heads=[heads[1], heads[0], *heads[2:]])
    with pytest.raises(ModelError, match="model.json and model.onnx disagree on heads"):
        load_model_info(model)


def test_the_model_id_covers_external_weights_and_label_facts(tiny_models, tmp_path):
    """Two exports differing only in model.onnx.data, or only in a neutral mean, have different ids."""
    from emonet_batch.model.record import sha256_file

    base = load_model_info(tiny_models["small"])
    external = copy_model(tiny_models["small"], tmp_path / "external")
    data = bytearray((external / "model.onnx.data").read_bytes())
    data[100] ^= 0xFF  # other weights, same graph files
    (external / "model.onnx.data").write_bytes(bytes(data))
    edit_record(external, files={**base.files, "model.onnx.data": sha256_file(external / "model.onnx.data")})
    assert load_model_info(external).model_id != base.model_id
    shifted = copy_model(tiny_models["small"], tmp_path / "shifted")
    edit_record(shifted, neutral_means={**base.neutral_means, "amusement": base.neutral_means["amusement"] + 0.5})
    assert load_model_info(shifted).model_id != base.model_id


def test_the_halves_share_the_fused_graphs_weights_and_give_its_outputs(tiny_models, tmp_path):
    """tower.onnx and heads.onnx are the fused graph cut at the embedding, reading its weights file; the CPU path
    runs them and gives what the fused graph gives."""
    directory = tiny_models["large"]
    for name, wants in (("tower.onnx", (["pixels"], ["embedding"])), ("heads.onnx", (["embedding"], ["scores"]))):
        half = onnx.load(str(directory / name), load_external_data=False)
        assert ([i.name for i in half.graph.input], [o.name for o in half.graph.output]) == wants
        assert (directory / name).stat().st_size < 200_000
        locations = {e.value for t in half.graph.initializer for e in t.external_data if e.key == "location"}
        assert locations == {"model.onnx.data"}
    import onnxruntime as ort

    pixels = np.random.default_rng(3).integers(0, 256, size=(40, 64, 64, 3), dtype=np.uint8)
    scores, embedding = OnnxScorer(load_model_info(directory)).run(pixels)
    fused = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    want_scores, want_embedding = fused.run(["scores", "embedding"], {"pixels": pixels})
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    np.testing.assert_allclose(embedding, want_embedding, atol=1e-6)


def test_a_full_model_without_its_halves_is_refused(tiny_models, tmp_path):
    model = copy_model(tiny_models["small"], tmp_path / "model")
    record = json.loads((model / "model.json").read_text())
    edit_record(model, files={"model.onnx": record["files"]["model.onnx"]})
    with pytest.raises(ModelError, match="without tower.onnx and heads.onnx .*re-export it"):
        load_model_info(model, verify=False)


def test_a_newer_record_format_is_refused(tiny_models, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_models["small"], copy, ignore=shutil.ignore_patterns("checkpoint"))
    record = json.loads((copy / "model.json").read_text())
    assert record["format_version"] == FORMAT_VERSION
    (copy / "model.json").write_text(json.dumps({**record, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ModelError, match="is newer than this emonet-batch reads"):
        load_model_info(copy, verify=False)


def test_external_data_when_large(tiny_models, tmp_path):
    graph = onnx.load(str(tiny_models["small"] / "model.onnx"))
    files = save_onnx(graph, tmp_path / "model.onnx", external_data_bytes=0)
    assert [f.name for f in files] == ["model.onnx", "model.onnx.data"]
    assert (tmp_path / "model.onnx").stat().st_size < 200_000 < (tmp_path / "model.onnx.data").stat().st_size
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(["scores"], {"pixels": np.zeros((1, 64, 64, 3), np.uint8)})[0].shape == (1, 44)


def test_export_from_checkpoint_paths_with_full_siglip_model(tmp_path):
    encoder, heads = write_synthetic_checkpoint(tmp_path / "ckpt", "tiny", "small", seed=3, full_model=True)
    result = export_model(ExportConfig(out=tmp_path / "model", encoder=str(encoder), heads=str(heads), normalize=False))
    assert result.parity.max_abs_score_diff <= 1e-4
    assert result.record["normalize"] is False
    assert result.record["sources"]["encoder"] == str(encoder.resolve())


def test_fp16_variant_reports_its_error(tmp_path):
    result = export_model(ExportConfig(out=tmp_path, synthetic="tiny", head_size="small", precision="fp16"))
    parity = load_model_info(tmp_path).record["parity"]
    assert load_model_info(tmp_path).precision == "fp16"
    assert 0 < parity["max_abs_score_diff"] <= 0.05
    assert parity == result.parity.as_dict()
    graph = onnx.load(str(tmp_path / "model.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.graph.initializer)
    assert graph.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert_scores_independent_of_the_batch(tmp_path)


def test_int8_variant_quantises_the_weight_products_and_records_its_accuracy(tmp_path, capsys):
    assert (
        main(
            [
                "export",
                "--synthetic",
                "tiny",
                "--head-size",
                "large",
                "--precision",
                "int8",
                "--parity-images",
                "6",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert "parity vs PyTorch on 6 images" in capsys.readouterr().out
    info = load_model_info(tmp_path)
    assert info.precision == "int8" and info.record["quantization"]["constant_weights_only"] is True
    parity = info.record["parity"]
    assert (
        parity["images"] == 6 and 0 < parity["max_abs_score_diff"] <= 0.05 and parity["embedding_cosine_min"] >= 0.999
    )
    graph = onnx.load(str(tmp_path / "model.onnx"))
    ops = {node.op_type for node in graph.graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    heads = onnx.load(str(tmp_path / "heads.onnx"), load_external_data=False)
    assert not {node.op_type for node in heads.graph.node} & {"DynamicQuantizeLinear", "MatMulInteger"}
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.graph.initializer)
    props = {p.key for p in graph.metadata_props}
    assert "emonet_batch.quantization" in props and "emonet_batch.heads" in props
    scores, embedding = OnnxScorer(info).run(np.zeros((3, 64, 64, 3), np.uint8))
    assert scores.shape == (3, 44) and scores.dtype == np.float32 and embedding.shape == (3, 64)
    assert_scores_independent_of_the_batch(tmp_path)  # although int8 activations are quantised per call
    assert main(["info", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "int8 (int8 per channel, 7-bit range weights)" in table and "within (score uses it)" in table


def test_refuses_to_overwrite_and_bad_combinations(tiny_models, tmp_path):
    with pytest.raises(UsageError, match="--overwrite"):
        export_model(ExportConfig(out=tiny_models["small"], synthetic="tiny"))
    with pytest.raises(UsageError, match="either --synthetic"):
        export_model(ExportConfig(out=tmp_path, synthetic="tiny", encoder="x", heads="y"))
    with pytest.raises(UsageError, match="needs --encoder and --heads"):
        export_model(ExportConfig(out=tmp_path, encoder="x"))
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UsageError, match="cannot create the output directory .*dangling: File exists"):
        export_model(ExportConfig(out=tmp_path / "dangling", synthetic="tiny"))


def test_a_failed_export_leaves_no_model_behind(tiny_models, tmp_path):
    """A new --out folder goes with a failed export; in one that was there, only the model files it wrote go."""
    with pytest.raises(UsageError, match="unknown heads: nope"):
        export_model(ExportConfig(out=tmp_path / "new" / "m", synthetic="tiny", only_heads=("nope",)))
    assert not (tmp_path / "new" / "m").exists()
    kept = tmp_path / "kept"
    shutil.copytree(tiny_models["small"], kept)
    with pytest.raises(UsageError, match="--overwrite"):  # refused before anything is written or removed
        export_model(ExportConfig(out=kept, synthetic="tiny", only_heads=("nope",)))
    assert load_model_info(kept).model_id == load_model_info(tiny_models["small"]).model_id
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="unknown heads: nope"):
        export_model(ExportConfig(out=kept, synthetic="tiny", only_heads=("nope",), overwrite=True))
    assert not (kept / "model.json").exists() and not (kept / "model.onnx").exists()
    assert (kept / "notes.txt").read_text() == "mine"


def test_heads_must_fit_the_encoder_width(tmp_path):
    from emonet_batch.export.synthetic import write_heads

    encoder, _ = write_synthetic_checkpoint(tmp_path / "ckpt", "tiny", "small", seed=0)
    write_heads(tmp_path / "wide", 1152, "small")
    with pytest.raises(ModelError, match="1152-d input but the encoder produces 64-d"):
        export_model(ExportConfig(out=tmp_path / "m", encoder=str(encoder), heads=str(tmp_path / "wide")))


def test_cli_export_and_info(tmp_path, capsys):
    assert main(["export", "--synthetic", "tiny", "--head-size", "small", "--seed", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "parity vs PyTorch on 4 images: max |Δ score|" in out
    assert main(["info", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "model id (graph files + label facts)" in table and "44 (small)" in table and "max_abs_score_diff" in table
    import fsspec  # a model at a URL is fetched into the cache, as a run fetches it

    store = fsspec.filesystem("memory")
    for path in tmp_path.iterdir():
        if path.is_file():
            store.pipe_file(f"/info-test/m/{path.name}", path.read_bytes())
    assert main(["info", "memory://info-test/m", "--model-cache", str(tmp_path / "cache")]) == 0
    fetched = capsys.readouterr().out
    assert "44 (small)" in fetched and load_model_info(tmp_path).model_id in fetched


def test_cli_export_offline_hub_ids_fail_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing to fall back on
    code = main(
        [
            "export",
            "--encoder",
            "google/siglip2-so400m-patch16-384",
            "--heads",
            "laion/Empathic-Insight-Face-Large",
            "--out",
            str(tmp_path / "m"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "cannot download google/siglip2-so400m-patch16-384" in err


def test_cli_usage_errors_are_one_line(tmp_path, capsys):
    assert main(["export", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs --encoder and --heads" in err
    assert main(["export", "--synthetic", "huge", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert (
        main(
            [
                "export",
                "--heads",
                str(tmp_path / "missing"),
                "--encoder",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "neither a directory nor a hub id" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing")]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"emonet-batch: error: not an exported model directory (no model.json): {tmp_path / 'missing'}"
    )


def test_a_heads_only_export_reads_its_towers_embeddings_and_score_refuses_it(tiny_models, tmp_path, capsys):
    import onnxruntime as ort

    from emonet_batch.run.config import score_config
    from emonet_batch.run.score import run_score

    # the checkpoint tiny_models["small"] was exported from: its heads alone, for its tower
    checkpoint = tiny_models["small"] / "checkpoint"
    args = ["export", "--encoder", str(checkpoint / "encoder"), "--heads", str(checkpoint / "heads"), "--heads-only"]
    assert main([*args, "--out", str(tmp_path / "heads")]) == 0
    assert "heads only (embedding in)" in capsys.readouterr().out
    heads, full = load_model_info(tmp_path / "heads"), load_model_info(tiny_models["small"])
    assert heads.heads_only and not full.heads_only and heads.tower_id == full.tower_id and heads.image_size == 0
    assert heads.record["parity"]["max_abs_score_diff"] <= 1e-4
    pixels = np.random.default_rng(3).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    scores, embedding = OnnxScorer(full).run(pixels)
    (rescored,) = ort.InferenceSession(str(heads.onnx_path)).run(["scores"], {"embedding": embedding})
    np.testing.assert_allclose(rescored, scores, rtol=0, atol=1e-5)
    assert_scores_independent_of_the_batch(tmp_path / "heads")  # every call has the same number of rows
    with pytest.raises(UsageError, match="heads-only"):
        run_score(score_config((str(tmp_path),), str(tmp_path / "out"), str(tmp_path / "heads")))
    assert main([*args, "--precision", "int8", "--out", str(tmp_path / "int8")]) == 2
    assert "--heads-only exports fp32 only" in capsys.readouterr().err

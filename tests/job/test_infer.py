"""ONNX Runtime session settings and the accuracy guard: pure functions and one tiny session, no Ray."""

import json
import shutil

import numpy as np
import pytest

from emonet_batch.errors import UsageError
from emonet_batch.job.infer import OnnxScorer, SessionOptions, provider_list
from emonet_batch.model.accuracy import accuracy_problems
from emonet_batch.model.record import load_model_info
from emonet_batch.run.config import score_config
from emonet_batch.run.score import run_score

from ..shardkit import assert_scores_independent_of_the_batch


def test_provider_lists_put_the_intended_provider_first_and_cpu_last():
    assert provider_list(SessionOptions(), 384) == [("CPUExecutionProvider", {})]
    assert [name for name, _ in provider_list(SessionOptions(device="cuda"), 384)] == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    providers = provider_list(SessionOptions(device="tensorrt", max_batch=64, trt_cache_dir="/cache"), 384)
    assert [name for name, _ in providers] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    trt = providers[0][1]
    assert (
        trt["trt_profile_min_shapes"] == "pixels:1x384x384x3" and trt["trt_profile_max_shapes"] == "pixels:64x384x384x3"
    )
    assert trt["trt_engine_cache_enable"] and trt["trt_engine_cache_path"] == "/cache"
    assert trt["trt_fp16_enable"] and not trt["trt_bf16_enable"]
    bf16 = provider_list(SessionOptions(device="tensorrt", trt_precision="bf16"), 384)[0][1]
    assert bf16["trt_bf16_enable"] and not bf16["trt_fp16_enable"]
    with pytest.raises(ValueError, match="unknown TensorRT precision 'int4'"):
        provider_list(SessionOptions(device="tensorrt", trt_precision="int4"), 384)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        provider_list(SessionOptions(device="tpu"), 384)


def test_a_provider_that_did_not_load_is_an_error_and_iobinding_gives_the_same_outputs(tiny_models):
    info = load_model_info(tiny_models["small"])
    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    cpu = OnnxScorer(info)
    cpu.check_provider()
    # this ONNX Runtime has no CUDA provider: ORT warns and runs on the CPU, which the check must catch
    bound = OnnxScorer(info, SessionOptions(device="cuda"))
    with pytest.raises(RuntimeError, match="CUDAExecutionProvider is not active") as error:
        bound.check_provider()
    # why, in the same line, and where to look further
    assert "the CPU build: pip install 'onnxruntime-gpu" in str(error.value)
    assert "`emonet-batch doctor --execution-provider cuda` there" in str(error.value)
    for got, want in zip(bound.run(pixels), cpu.run(pixels)):  # the IOBinding path
        # the same values; not bit for bit: the CPU path scores one image per call, the bound one the batch
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_cpu_scores_of_an_image_do_not_depend_on_its_batch(tiny_models):
    assert_scores_independent_of_the_batch(tiny_models["large"])  # fp32; fp16 and int8: test_export.py


def test_a_tower_of_short_calls_takes_one_thread_after_its_first_batch_and_scores_the_same(tiny_models, monkeypatch):
    from emonet_batch.job import infer

    def threads(scorer):
        return scorer.session.get_session_options().intra_op_num_threads

    pixels = np.random.default_rng(5).integers(0, 256, size=(6, 64, 64, 3), dtype=np.uint8)
    info = load_model_info(tiny_models["small"])
    monkeypatch.setattr(infer, "THREADED_TOWER_MIN_CALL_S", 0.0)  # no call is that short: the threads stay
    threaded = OnnxScorer(info, SessionOptions(actors_per_node=1))
    first = threaded.run(pixels)
    assert threads(threaded) == infer.intra_op_threads(SessionOptions()) and not threaded.sizing_tower
    monkeypatch.setattr(infer, "THREADED_TOWER_MIN_CALL_S", 60.0)
    scorer = OnnxScorer(info)
    scorer.run(pixels[:2])
    assert threads(scorer) == 1  # the tiny tower's calls take milliseconds
    for got, want in zip(scorer.run(pixels), first):
        assert np.array_equal(got, want)
    given = OnnxScorer(info, SessionOptions(intra_op_threads=2))  # --threads-per-worker is kept as given
    given.run(pixels[:2])
    assert threads(given) == 2


def with_parity(source, target, **parity):
    shutil.copytree(source, target)
    record = json.loads((target / "model.json").read_text())
    record["parity"].update(parity)
    (target / "model.json").write_text(json.dumps(record))
    return load_model_info(target)


def test_accuracy_limits(tiny_models, tmp_path):
    assert accuracy_problems(load_model_info(tiny_models["small"]).record) == []
    loose = with_parity(tiny_models["small"], tmp_path / "loose", max_abs_score_diff=0.2, embedding_cosine_min=0.99)
    assert accuracy_problems(loose.record) == [
        "max |score difference| 0.2 > 0.05",
        "embedding cosine min 0.990000 < 0.999",
    ]


def test_score_refuses_an_inaccurate_model_before_reading_anything(tiny_models, tmp_path):
    with_parity(tiny_models["small"], tmp_path / "loose", max_abs_score_diff=0.08)
    config = score_config((str(tmp_path / "missing.tar"),), str(tmp_path / "out"), str(tmp_path / "loose"))
    with pytest.raises(
        UsageError, match=r"records max \|score difference\| 0.08 > 0.05 against fp32; .*--allow-inaccurate-model"
    ):
        run_score(config)
    assert not (tmp_path / "out").exists()


def test_a_cpu_actor_takes_its_share_of_its_own_node_not_of_the_cluster():
    from emonet_batch.edge.plan import actors_per_node
    from emonet_batch.job.infer import intra_op_threads

    # 8 nodes of 16 CPUs (and a head without CPUs for work): one actor per node gets its node's 16 threads
    per_node = actors_per_node(8, [16.0] * 8 + [0.0])
    assert per_node == 1 and intra_op_threads(SessionOptions(actors_per_node=per_node), node_cpus=16) == 16
    assert intra_op_threads(SessionOptions(actors_per_node=actors_per_node(3, [16.0, 16.0])), node_cpus=16) == 8
    assert intra_op_threads(SessionOptions(intra_op_threads=3, actors_per_node=4), node_cpus=16) == 3  # as given
    assert intra_op_threads(SessionOptions(actors_per_node=32), node_cpus=16) == 1
    assert actors_per_node(2, []) == 2  # no node known yet (a cluster scaling from zero): never zero


def test_what_a_run_asks_the_autoscaler_for_and_what_it_lacks():
    from emonet_batch.edge.capacity import contains, describe, needed_bundles, shortfall, without
    from emonet_batch.edge.plan import actor_resources
    from emonet_batch.job.config import EngineOptions

    assert actor_resources(EngineOptions(gpus_per_worker=1.0)) == {"num_gpus": 1.0, "num_cpus": 0}
    assert actor_resources(EngineOptions()) == {"num_gpus": None, "num_cpus": 0}

    assert needed_bundles(EngineOptions(gpus_per_worker=0.5, workers=3)) == [{"GPU": 0.5}] * 3
    assert needed_bundles(EngineOptions(gpus_per_worker=1.0)) == [{"GPU": 1.0}]  # one actor until GPUs are there
    assert needed_bundles(EngineOptions(workers=4)) == [{"CPU": 1.0}]  # CPU actors hold no slot: the read tasks' CPU
    lacking = shortfall([{"GPU": 0.5}] * 3, {"GPU": 1.0, "CPU": 8.0})
    assert lacking == {"GPU": 0.5} and describe(lacking) == "0.5 GPU"
    assert shortfall([{"CPU": 1.0}], {"CPU": 2.0}) == {} and shortfall([{"CPU": 1.0}], {}) == {"CPU": 1.0}
    # the cluster's one resource request, which other requesters (Ray Data's coordinator) replace: is ours in it,
    # and what remains of it without ours
    theirs = [{"CPU": 1.0}, {"CPU": 1.0}]
    assert contains(theirs + [{"GPU": 1.0}], [{"GPU": 1.0}]) and not contains(theirs, [{"GPU": 1.0}])
    assert (
        not contains([{"GPU": 1.0}], [{"GPU": 1.0}] * 2) and without(theirs + [{"GPU": 1.0}], [{"GPU": 1.0}]) == theirs
    )

"""The grouped config of a run. No Ray."""

import pytest

from emonet_batch.errors import UsageError
from emonet_batch.job.config import LabelOptions
from emonet_batch.run.config import OPTION_GROUPS, score_config


def test_flat_option_names_land_in_their_groups():
    config = score_config(["x.tar"], "out", "m", batch_size=8, meta_fields=["age"], progress="off", overwrite=True)
    assert config.engine.batch_size == 8 and config.labels.meta_fields == ("age",)
    assert config.presentation.progress == "off" and config.overwrite
    assert score_config("data/", "out", "m").inputs == ("data/",)  # one input as a string, not its letters
    repeated = score_config(["x.tar"], "out", "m", meta_fields=["age", "gender", "age"])
    assert repeated.labels.meta_fields == ("age", "gender")  # one column, one warning, whatever the repeats
    assert score_config("x.tar", "out", "m", meta_fields="age, gender").labels.meta_fields == ("age", "gender")
    with pytest.raises(UsageError, match="unknown options batchsize"):
        score_config(["x.tar"], "out", "m", batchsize=8)


def test_every_option_name_is_defined_once():
    from dataclasses import fields

    from emonet_batch.job.config import EngineOptions
    from emonet_batch.run.config import Presentation

    names = [f.name for kind in (LabelOptions, EngineOptions, Presentation) for f in fields(kind)]
    assert len(names) == len(set(names)) and set(names) <= set(OPTION_GROUPS)


def test_an_execution_provider_without_gpu_actors_is_refused():
    """Without --gpus-per-worker the actors run on the CPU: a provider given alone would be ignored."""
    from emonet_batch.run.score import check_config

    check_config(score_config(["x.tar"], "out", "m", execution_provider="tensorrt", gpus_per_worker=1))
    check_config(score_config(["x.tar"], "out", "m"))
    with pytest.raises(UsageError) as raised:
        check_config(score_config(["x.tar"], "out", "m", execution_provider="cuda"))
    assert str(raised.value) == (
        "--execution-provider cuda is for GPU actors: give --gpus-per-worker too (1: a GPU each)"
    )
    gpu = {"gpus_per_worker": 1, "trt_precision": "bf16"}
    check_config(score_config(["x.tar"], "o", "m", execution_provider="tensorrt", **gpu))
    with pytest.raises(UsageError, match="^--trt-precision bf16 is for --execution-provider tensorrt$"):
        check_config(score_config(["x.tar"], "o", "m", execution_provider="cuda", **gpu))
    with pytest.raises(UsageError, match="^--threads-per-worker is for CPU actors"):
        check_config(score_config(["x.tar"], "o", "m", gpus_per_worker=1, threads_per_worker=4))

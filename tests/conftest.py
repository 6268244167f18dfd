"""Shared fixtures: tiny synthetic models exported once per test session, and one embedded Ray runtime."""

import importlib.util
import os
from pathlib import Path

import pytest

from .shardkit import S3_CREDENTIALS

# Tests never reach the Hugging Face hub: hub ids must fail as offline, at once. Set before any test imports
# huggingface_hub or datasets, which read it once at import (a later monkeypatch.setenv would not count).
os.environ["HF_HUB_OFFLINE"] = "1"
# The object-storage tests' credentials, in every process of the session: Ray's workers read their own environment,
# as a cluster's nodes do, and the shared runtime may start before the first S3 test (only the moto server on
# loopback accepts them).
os.environ.update(S3_CREDENTIALS)


#: The tests of export/ import torch themselves: not collected where it is not installed (`make test-fast` runs
#: without it).
collect_ignore = [] if importlib.util.find_spec("torch") else ["export"]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Exported tiny synthetic models by head size: {"small": dir, "large": dir}."""
    from emonet_batch.export import ExportConfig, export_model

    root = tmp_path_factory.mktemp("models")
    return {
        size: export_model(ExportConfig(out=root / size, synthetic="tiny", head_size=size, seed=7)).directory
        for size in ("small", "large")
    }


@pytest.fixture(scope="session")
def tiny_heads(tiny_models, tmp_path_factory) -> dict[str, Path]:
    """Heads-only exports of the tiny models' checkpoints, by head size (both read the one tiny tower)."""
    from emonet_batch.export import ExportConfig, export_model

    root = tmp_path_factory.mktemp("heads")
    return {
        size: export_model(
            ExportConfig(
                out=root / size,
                encoder=str(directory / "checkpoint" / "encoder"),
                heads=str(directory / "checkpoint" / "heads"),
                heads_only=True,
            )
        ).directory
        for size, directory in tiny_models.items()
    }


@pytest.fixture
def model(tiny_models):
    """The small tiny model's record."""
    from emonet_batch.model.record import load_model_info

    return load_model_info(tiny_models["small"])


@pytest.fixture
def ray_runtime():
    """The embedded Ray runtime the in-process tests share: started on first use, kept for the session
    (Ray shuts it down at exit). A test that needs a cluster of its own takes `own_ray` instead."""
    from emonet_batch.edge.runtime import ensure_ray

    ensure_ray()


@pytest.fixture
def own_ray():
    """For a test that starts its own Ray (fake GPUs, a multi-node cluster): the shared runtime is stopped
    first, and whatever the test started is stopped after it."""
    from emonet_batch.edge.runtime import stop_ray

    stop_ray()
    yield
    stop_ray()


#: Markers by the fixtures a test uses (directly or through other fixtures): `make test-fast` leaves these out.
_MARKERS_BY_FIXTURE = {
    "ray_runtime": "ray",
    "own_ray": "ray",
    "tiny_models": "torch",  # exporting the tiny models needs torch
    "tiny_heads": "torch",
    "s3": "s3",
}


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture, marker in _MARKERS_BY_FIXTURE.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)

"""Shared fixtures: tiny synthetic models exported once per test session."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Exported tiny synthetic models by head size: {"small": dir, "large": dir}."""
    from emonet_batch.export import ExportConfig, export_model

    root = tmp_path_factory.mktemp("models")
    return {
        size: export_model(ExportConfig(out=root / size, synthetic="tiny", head_size=size, seed=7)).directory
        for size in ("small", "large")
    }

"""Nightly's choice of shards. No Ray."""

from emonet_batch.job.config import StorageOptions
from emonet_batch.job.layout import (
    commit_file,
)
from emonet_batch.job.storage import filesystem
from emonet_batch.ops.nightly import committed_everywhere, new_shards

from ..rowkit import shards


def test_nightly_scores_only_what_no_partition_committed(tmp_path):
    for day, shard in (("2026-11-24", "a"), ("2026-11-25", "b")):
        (tmp_path / f"dt={day}" / "_commits").mkdir(parents=True)
        (tmp_path / f"dt={day}" / commit_file(shard)).write_text("{}")
    (tmp_path / "not-a-partition" / "_commits").mkdir(parents=True)
    (tmp_path / "not-a-partition" / commit_file("c")).write_text("{}")
    fs, root = filesystem(str(tmp_path), StorageOptions())
    done = committed_everywhere(fs, root)
    assert done == {"a", "b"}
    assert [s.shard_id for s in new_shards(shards("a", "b", "c", "d"), done)] == ["c", "d"]
    assert committed_everywhere(fs, root + "/missing") == set()


def test_nightly_leaves_out_listed_files_without_images_and_takes_accept_truncated(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from emonet_batch.ops.nightly import NightlyConfig, run_nightly

    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"url": ["http://x/a.jpg"], "status": ["success"]}), tmp_path / "in" / "00000.parquet")
    (tmp_path / "in" / "00000_stats.json").write_text("{}")
    (tmp_path / "nightly.yaml").write_text(
        f"inputs: ['{tmp_path / 'in'}']\noutput_root: {tmp_path / 'out'}\nmodel: /models/m\n"
        "options: {accept-truncated: true, io_timeout: 20}\n"
    )
    config = NightlyConfig.from_yaml(tmp_path / "nightly.yaml")
    assert config.options["accept_truncated"] is True and config.storage.io_timeout == 20
    assert run_nightly(config) is None  # nothing to score, and no run started


def test_a_config_is_checked_as_the_command_line_is_and_each_fault_is_one_line(tmp_path):
    import pytest

    from emonet_batch.errors import UsageError
    from emonet_batch.ops.nightly import NightlyConfig

    required = f"inputs: in\noutput_root: {tmp_path / 'out'}\nmodel: m\n"
    path = tmp_path / "nightly.yaml"
    options = "options:\n  progress: off\n  meta_fields: [gender, 30]\n  no_stats: yes\n  batch_size: '8'\n"
    path.write_text(required + options)
    config = NightlyConfig.from_yaml(path)  # YAML's off, yes and numbers as the flags would take them
    assert config.options == {"progress": "off", "meta_fields": ["gender", "30"], "stats": False, "batch_size": 8}
    faults = {
        "inputs: [\n": "not valid YAML: expected the node content, but found '<stream end>' at line 2, column 1",
        "- in\n": "not a mapping of inputs, output_root, model and options",
        "inputs: {a: 1}\noutput_root: o\nmodel: m\n": "inputs (one or a list), output_root and model must be paths",
        required + "options: [batch_size]\n": "options must be a mapping of option names to values",
        required + "options: {batch_size: many}\n": "option batch_size: 'many' is not a valid integer range",
        required + "options: {batch_size: 0}\n": "option batch_size: 0 is not in the range x>=1",
        required + "options: {meta_fields: {a: 1}}\n": "option meta_fields: expected a list of names",
        required + "options: {execution_provider: [cuda]}\n": "option execution_provider: expected one value, got list",
        required + "batch_size: 8\nworkers: 0\n": "unknown keys batch_size, workers; a config has inputs, output_root, "
        "model, options (score's flags go under options)",
    }
    for text, message in faults.items():
        path.write_text(text)
        with pytest.raises(UsageError) as raised:
            NightlyConfig.from_yaml(path)
        assert str(raised.value).startswith(f"{path}: {message}") and "\n" not in str(raised.value), text
    path.write_bytes(b"inputs: caf\xe9\n")
    with pytest.raises(UsageError, match="nightly.yaml: not UTF-8 text$"):
        NightlyConfig.from_yaml(path)

"""Inputs and shard ids. No Ray."""

import os

from emonet_batch.job.inputs import normalised_location, shard_id


def test_shard_ids_depend_on_the_one_input_location_only(tmp_path):
    a, b = "a/shard-00000.tar", "b/shard-00000.tar"
    assert shard_id(a).startswith("shard-00000-") and shard_id(a) != shard_id(b)
    assert shard_id(a) == shard_id(os.path.abspath(a)) == shard_id(f"file://{os.path.abspath(a)}")
    signed = "https://host/bucket/s.tar?X-Amz-Signature=CANARY&X-Amz-Expires=60"
    assert shard_id(signed) == shard_id("https://host/bucket/s.tar") and "CANARY" not in normalised_location(signed)
    assert shard_id("s3://KEY:SECRET@bucket/s.tar") == shard_id("s3://bucket/s.tar")


def test_inputs_that_name_nothing_are_one_line(tmp_path):
    import pytest

    from emonet_batch.errors import UsageError
    from emonet_batch.job.config import StorageOptions
    from emonet_batch.job.inputs import expand_inputs

    for spec, message in (
        (f"{tmp_path}/shard-{{", f"unbalanced braces in the input {tmp_path}/shard-{{"),
        (f"{tmp_path}/none-*.tar", f"no shards (.tar, .parquet) match {tmp_path}/none-*.tar"),
    ):
        with pytest.raises(UsageError) as raised:
            expand_inputs([spec], StorageOptions())
        assert str(raised.value) == message


def test_input_lists_that_cannot_be_read_are_one_line(tmp_path):
    """A list naming itself (directly or through another), a folder, bytes that are not UTF-8 text."""
    import pytest

    from emonet_batch.errors import UsageError
    from emonet_batch.job.config import StorageOptions
    from emonet_batch.job.inputs import expand_inputs

    (tmp_path / "shard-00000.tar").write_bytes(b"")
    (tmp_path / "a.txt").write_text(f"{tmp_path}/shard-00000.tar\r\n\r\n@{tmp_path}/b.txt\r\n")
    (tmp_path / "b.txt").write_text(f"# the first list again\n@{tmp_path}/a.txt\n")
    (tmp_path / "c.txt").write_bytes(b"\xff\xfeshard-00000.tar\n")
    (tmp_path / "d.txt").mkdir()
    for name, message in (
        ("a.txt", f"the input list {tmp_path}/a.txt names itself (through @lines)"),
        ("c.txt", f"input list is not UTF-8 text: {tmp_path}/c.txt"),
        ("d.txt", f"input list is a directory, not a file: {tmp_path}/d.txt"),
    ):
        with pytest.raises(UsageError) as raised:
            expand_inputs([f"@{tmp_path}/{name}"], StorageOptions())
        assert str(raised.value) == message
    (tmp_path / "b.txt").write_text(f"{tmp_path}/shard-00000.tar\n")  # a list may name another list
    assert [s.url for s in expand_inputs([f"@{tmp_path}/a.txt"], StorageOptions())] == [f"{tmp_path}/shard-00000.tar"]


def test_files_a_folder_lists_under_the_output_are_not_inputs(tmp_path, monkeypatch):
    """`score data/ --output data/out` (or `--output data`): the second run does not read its own label files
    back as inputs."""
    import pytest

    from emonet_batch.errors import UsageError
    from emonet_batch.job.config import StorageOptions
    from emonet_batch.job.inputs import expand_inputs

    for name in ("data/shard-00000.tar", "data/out/labels/shard-00000-1.parquet", "data/out2/labels/x.parquet"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    for output in ("data/out", f"file://{tmp_path}/data/out/", None):
        listed = expand_inputs(["data"], StorageOptions(), output)
        names = [shard.url.removeprefix(f"{tmp_path}/") for shard in listed]
        own = [] if output else ["data/out/labels/shard-00000-1.parquet"]
        assert names == sorted(["data/shard-00000.tar", "data/out2/labels/x.parquet", *own])
    assert len(expand_inputs(["data"], StorageOptions(), "data")) == 3  # shards beside an output are inputs
    named = "data/out/labels/shard-00000-1.parquet"  # named, it is an input (and refused by the run's checks)
    assert [s.url for s in expand_inputs([named], StorageOptions(), "data/out")] == [named]
    with pytest.raises(UsageError) as raised:
        expand_inputs(["data/out/labels"], StorageOptions(), "data/out")
    assert str(raised.value) == "no input shards but the output's own files (1 under it)"

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

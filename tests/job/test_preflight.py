"""Inputs checked before a run, storage deadlines and the clients' timeouts. No Ray."""

import io
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emonet_batch.errors import UsageError
from emonet_batch.job import storage
from emonet_batch.job.config import StorageOptions
from emonet_batch.job.inputs import expand_inputs, without
from emonet_batch.job.preflight import check_inputs, check_key_column, left_out_warning, parquet_schema
from emonet_batch.job.storage import Deadline, StorageStall, filesystem

from ..shardkit import good_shards, parquet_shard


def metadata_file(path, rows: int = 3, columns: int = 1):
    """A Parquet file as img2dataset writes beside each tar: metadata, no image column."""
    table = pa.table({"url": [f"http://x/{i}.jpg" for i in range(rows)], "status": ["success"] * rows})
    for index in range(columns):
        table = table.append_column(f"extra_{index:04d}_{'x' * 40}", pa.array(range(rows)))
    pq.write_table(table, path)
    return path


def test_listed_files_without_images_are_left_out_and_named_ones_refused(tmp_path):
    (tar,) = good_shards(tmp_path / "in", shards=1, per_shard=2)
    metadata_file(tmp_path / "in" / "shard-00000.parquet")
    parquet_shard(tmp_path / "in" / "faces.parquet", 3)
    (tmp_path / "in" / "shard-00000_stats.json").write_text("{}")
    listed = expand_inputs([str(tmp_path / "in")], StorageOptions())
    assert sorted(s.url.rsplit("/", 1)[1] for s in listed) == ["faces.parquet", "shard-00000.parquet", tar.name]
    left_out = check_inputs(listed, StorageOptions())
    kept = without(listed, left_out)
    assert sorted(s.url.rsplit("/", 1)[1] for s in kept) == ["faces.parquet", tar.name]
    assert left_out_warning(left_out) == [
        "left out 1 Parquet files without an image column (img2dataset's metadata files?): shard-00000.parquet"
    ]
    named = expand_inputs([str(tmp_path / "in" / "shard-00000.parquet")], StorageOptions())
    with pytest.raises(UsageError, match=r"shard-00000.parquet holds no image column .*: not an image shard"):
        check_inputs(named, StorageOptions())
    with pytest.raises(UsageError, match="has no key column 'id'"):
        check_inputs(expand_inputs([str(tmp_path / "in" / "faces.parquet")], StorageOptions()), StorageOptions(), "id")
    (tmp_path / "in" / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(UsageError, match="not a Parquet file: .*broken.parquet"):
        check_inputs(expand_inputs([str(tmp_path / "in" / "broken.parquet")], StorageOptions()), StorageOptions())


def test_a_column_of_bytes_named_in_meta_fields_is_refused(tmp_path):
    """A label column holds text, numbers or JSON: raw bytes (a mask, an embedding blob) are no metadata."""
    path = parquet_shard(tmp_path / "faces.parquet", 3)
    table = pq.read_table(path)
    table = table.append_column("mask", pa.array([b"\x00\x01"] * 3, pa.binary()))
    table = table.append_column("digest", pa.array([b"\x00" * 4] * 3, pa.binary(4)))
    pq.write_table(table, path)
    shards = expand_inputs([str(path)], StorageOptions())
    assert check_inputs(shards, StorageOptions(), None, ("age", "emotion")) == []
    with pytest.raises(UsageError) as raised:
        check_inputs(shards, StorageOptions(), None, ("age", "mask", "digest"))
    assert str(raised.value) == (
        f"--meta-fields mask, digest: a column of bytes in {path}, which no label column carries (text, numbers, "
        "lists and structs are)"
    )


def test_a_key_column_needs_a_parquet_input(tmp_path):
    (tar,) = good_shards(tmp_path / "in", shards=1, per_shard=2)
    tars = expand_inputs([str(tar)], StorageOptions())
    with pytest.raises(UsageError, match="--key-column 'id' names a column of Parquet shards, but no input is one"):
        check_key_column(tars, "id")
    check_key_column(tars, None)
    parquet_shard(tmp_path / "in" / "faces.parquet", 3)
    check_key_column(expand_inputs([str(tmp_path / "in")], StorageOptions()), "id")  # one Parquet input is enough


def test_a_footer_longer_than_the_first_read_is_read_whole(tmp_path):
    path = metadata_file(tmp_path / "wide.parquet", columns=1500)
    assert int.from_bytes(path.read_bytes()[-8:-4], "little") > 64 << 10
    fs, local = filesystem(str(path), StorageOptions())
    assert parquet_schema(fs, local) == pq.read_schema(path)


def test_a_storage_call_that_does_not_answer_stalls_and_is_listed_while_it_waits(monkeypatch):
    monkeypatch.setattr(storage, "STALL_NOTICE_S", 0.1)
    release = threading.Event()
    seen = []

    def watch():
        while not release.is_set():
            seen.append(dict(storage.WAITING))
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    started = time.perf_counter()
    with pytest.raises(StorageStall, match="stalled for 1 s"):
        Deadline("shard-a", 0.6).call(release.wait)
    assert 0.5 < time.perf_counter() - started < 2 and "shard-a" not in storage.WAITING
    release.set()
    assert any("shard-a" in waiting for waiting in seen)
    assert isinstance(StorageStall("x"), OSError)  # retried by the read like any storage fault
    reader = Deadline("shard-a", 5).reader(io.BytesIO(b"x" * (3 << 20)))
    assert len(reader.read()) == 3 << 20
    with pytest.raises(KeyError):  # the call's own error, as it was
        Deadline("shard-a", 5).call({}.__getitem__, "missing")


def test_io_timeout_reaches_every_remote_client():
    options = StorageOptions(io_timeout=7)
    config = options.fsspec_options("s3")["config_kwargs"]
    assert config["connect_timeout"] == config["read_timeout"] == 7
    for protocol, key in (("gs", "session_kwargs"), ("https", "client_kwargs")):
        timeout = options.fsspec_options(protocol)[key]["timeout"]
        assert (timeout.total, timeout.connect, timeout.sock_read) == (None, 7, 7)
    assert options.fsspec_options("file") == {}


def test_a_file_of_another_kind_read_anyway_fails_for_good(tmp_path):
    from emonet_batch.job.read import parquet_rows

    path = metadata_file(tmp_path / "00000.parquet")
    with open(path, "rb") as stream:
        (end,) = list(parquet_rows(stream, "00000"))
    assert end["status"] == "failed" and end["retryable"] is False
    assert end["reason"].startswith("not a shard of images this run can read: no image column")

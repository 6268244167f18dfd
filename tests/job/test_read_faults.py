"""Reading through storage faults. No Ray."""

from emonet_batch.job.config import StorageOptions
from emonet_batch.job.inputs import Shard
from emonet_batch.job.rows import (
    COMPLETE,
    INCOMPLETE,
)
from emonet_batch.job.storage import filesystem


class FlakyStream:
    """A file that fails with a storage fault after `fail_after` bytes."""

    def __init__(self, data: bytes, fail_after: int | None):
        import io

        self.inner, self.fail_after = io.BytesIO(data), fail_after

    def read(self, size=-1):
        """The bytes up to `fail_after` (a short read), then the fault."""
        if self.fail_after is None:
            return self.inner.read(size)
        if self.inner.tell() >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        left = self.fail_after - self.inner.tell()
        return self.inner.read(left if size < 0 else min(size, left))

    def seekable(self):
        return False

    def close(self):
        pass


def test_a_storage_fault_while_reading_is_retried_without_giving_a_row_twice(tmp_path, monkeypatch):
    from emonet_batch.devtools.shards import write_shards
    from emonet_batch.job import read

    from ..shardkit import odd_samples

    (path,) = write_shards(odd_samples(), tmp_path, 100)
    data = path.read_bytes()
    fs, _ = filesystem(str(path), StorageOptions())
    faults = [len(data) // 2, None]  # the first read fails halfway, the second goes through

    class Flaky(type(fs)):
        def open(self, *args, **kwargs):
            return FlakyStream(data, faults.pop(0) if faults else len(data) // 3)

    monkeypatch.setattr(read, "READ_RETRY_DELAY_S", 0)
    monkeypatch.setattr(read, "filesystem", lambda url, storage: (Flaky(), str(path)))
    shard = Shard(str(path), "s", "tar")
    rows = list(read.shard_rows(shard, StorageOptions()))
    assert [r["seq"] for r in rows] == [*range(13), -1] and rows[-1]["status"] == COMPLETE
    assert rows[-1]["reason"] == "read 2 times after storage faults (ConnectionResetError: connection reset by peer)"
    # a fault on every read: incomplete after the attempts, each row still given once
    rows = list(read.shard_rows(shard, StorageOptions()))
    assert rows[-1]["status"] == INCOMPLETE and "reading failed 3 times" in rows[-1]["reason"]
    assert [r["seq"] for r in rows[:-1]] == list(range(len(rows) - 1)) and rows[-1]["count"] == len(rows) - 1

"""The manifest and its tables. No Ray."""

import pyarrow.parquet as pq

from emonet_batch.job.config import StorageOptions
from emonet_batch.job.storage import filesystem
from emonet_batch.run.config import score_config


def test_the_manifest_stays_small_and_its_tables_name_every_shard(model, tmp_path):
    """manifest.json is as large for 3,000 shards as for 30; the shard table holds every outcome, and the
    summary and stats name the first 20 shards that did not complete, in input order."""
    from types import SimpleNamespace

    from emonet_batch.analysis.stats import not_complete_shards
    from emonet_batch.analysis.summary import run_summary
    from emonet_batch.job.commit import ShardOutcome
    from emonet_batch.job.inputs import make_shard
    from emonet_batch.run.manifest import build_manifest, earlier_runs, shard_table, write_manifest

    fs, _ = filesystem(str(tmp_path), StorageOptions())
    sizes = []
    for count in (30, 3000):
        shards = [make_shard(f"/corpus/{count}/shard-{i:05d}.tar") for i in range(count)]
        outcomes = {
            s.shard_id: ShardOutcome(s.shard_id, s.display_url, "failed" if i % 2 else "complete", reason="gone")
            for i, s in enumerate(shards)
        }
        config = score_config(("/corpus",), str(tmp_path / str(count)), "m")
        summary = build_manifest(config, model, shards, outcomes, {"images": 0}, [], (1, "why"))
        output = str(tmp_path / str(count))
        write_manifest(fs, output, summary, shard_table(shards, outcomes), [{"exit_code": 1}] * 2)
        sizes.append(len((tmp_path / str(count) / "manifest.json").read_bytes()))
    assert sizes[1] - sizes[0] < 10, sizes  # the counts' digits alone
    assert summary["shard_counts"] == {"complete": 1500, "failed": 1500}
    assert pq.read_table(tmp_path / "3000" / "manifest.shards.parquet").num_rows == 3000
    assert earlier_runs(fs, output) == ([{"exit_code": 1}] * 2, [])
    (tmp_path / "30" / "manifest.runs.parquet").write_bytes(b"half a table")  # a history that cannot be read
    runs, warnings = earlier_runs(fs, str(tmp_path / "30"))
    assert runs == [] and warnings[0].startswith("manifest.runs.parquet cannot be read (")
    assert warnings[0].endswith("); the run history starts again with this run")
    named = not_complete_shards(fs, output, 20)
    assert [row["shard"] for row in named] == [s.shard_id for s in shards[1:40:2]]
    result = SimpleNamespace(
        outcomes=outcomes,
        figures=dict.fromkeys(("images", "errors", "shards_scored", "shards_skipped"), 0)
        | {"wall_s": 1.0, "images_per_s": 0.0},
        warnings=[],
        report=None,
        exit_code=1,
        exit_reason="why",
    )
    text = run_summary(result)
    assert text.count(": failed: gone") == 20 and "and 1480 more (manifest.shards.parquet names them all)" in text


def test_rerun_to_retry_is_said_only_of_shards_a_rerun_can_complete():
    from types import SimpleNamespace

    from emonet_batch.analysis.summary import run_summary
    from emonet_batch.job.commit import ShardOutcome
    from emonet_batch.run.manifest import exit_status

    stalled = ShardOutcome("a", "in/a.tar", "failed", reason="reading failed 3 times: stalled for 60 s")
    cut = ShardOutcome("b", "in/b.tar", "incomplete", 3, 3, reason="shard is truncated", retryable=False)
    done = ShardOutcome("c", "in/c.tar", "complete", 4, 4)
    assert exit_status({"a": stalled, "c": done}, 0.01)[1].endswith("; rerun to retry")
    only_cut = exit_status({"b": cut, "c": done}, 0.01)[1]
    assert "rerun to retry" not in only_cut and "a rerun reads the same bytes" in only_cut
    assert "rerun to retry 1 of them; for the other 1, a rerun reads" in exit_status({"a": stalled, "b": cut}, 0.01)[1]
    figures = {k: 0 for k in ("images", "errors", "shards_scored", "shards_skipped", "wall_s", "images_per_s")}
    figures.update(images=1, errors=3, shards_scored=1, shards_skipped=5)
    result = SimpleNamespace(
        outcomes={"a": stalled, "b": cut}, figures=figures, warnings=[], report=None, exit_code=1, exit_reason="-"
    )
    lines = run_summary(result).splitlines()
    retry, cannot = (
        lines.index("not complete (rerun to retry):"),
        lines.index("not complete (a rerun cannot fix these):"),
    )
    assert lines[retry + 1].startswith("  a: failed") and lines[cannot + 1].startswith("  b: incomplete")
    assert "this run: 1 image, 3 errors, 1 shard read, 5 committed before, 0.0 s, 0.0 images/s" in lines

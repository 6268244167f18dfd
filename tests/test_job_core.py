"""The job core and the run's pure steps without Ray: the pieces and the shard collector, the commit step, the
skip logic, nightly's shard selection and the grouped config."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emonet_batch.errors import UsageError
from emonet_batch.job.collect import SeqCoverage, ShardCollector
from emonet_batch.job.commit import commit_shard
from emonet_batch.job.config import LabelOptions, StorageOptions
from emonet_batch.job.inputs import Shard, normalised_location, shard_id
from emonet_batch.job.layout import (
    ERROR_COLUMNS,
    FIXED_LABEL_COLUMNS,
    commit_file,
    error_file,
    incomplete_file,
    label_file,
)
from emonet_batch.job.pieces import PieceWriter, read_rows, seq_ranges
from emonet_batch.job.rows import (
    COLLECTED_COLUMNS,
    COMPLETE,
    END,
    ERROR,
    INCOMPLETE,
    READ_SCHEMA,
    SAMPLE,
    SCORES,
    ShardEnd,
)
from emonet_batch.job.storage import StorageError, filesystem
from emonet_batch.model.record import load_model_info
from emonet_batch.ops.nightly import committed_everywhere, new_shards
from emonet_batch.run.config import OPTION_GROUPS, score_config
from emonet_batch.run.resume import claim_label_options, label_options, load_commits, split_committed

HEADS = 3
ATTEMPT = "attempt-1"
SHARD = Shard("in/s.tar", "s", "tar")


def batch(rows: list[tuple], heads: int = HEADS) -> dict[str, np.ndarray]:
    """A result batch as the edge streams it; rows are (kind, shard, seq) with an `end` row's seq its count."""
    count = len(rows)
    columns = {name: np.full(count, None, dtype=object) for name in (*COLLECTED_COLUMNS, "count", "status", "reason")}
    columns["seq"] = np.array([-1 if kind == END else seq for kind, _, seq in rows], dtype=np.int64)
    columns["kind"] = np.array([kind for kind, _, _ in rows], dtype=object)
    columns["shard"] = np.array([shard for _, shard, _ in rows], dtype=object)
    columns["key"] = np.array([f"k{seq}" for _, _, seq in rows], dtype=object)
    columns["count"] = np.array([seq if kind == END else 0 for kind, _, seq in rows], dtype=np.int64)
    columns["status"] = np.array([COMPLETE if kind == END else None for kind, _, _ in rows], dtype=object)
    columns["scores"] = np.arange(count * heads, dtype=np.float32).reshape(count, heads)
    columns["worker"] = np.full(count, "host:1:gpu=-", dtype=object)
    return columns


@pytest.fixture
def scored(tmp_path):
    """An inference worker's piece writer: scored blocks of (kind, shard, seq) rows in, receipts out."""
    fs, output = filesystem(str(tmp_path / "out"), StorageOptions())
    writer = PieceWriter(fs, output, ATTEMPT, "host:1:gpu=-")

    def receipts(rows: list[tuple]) -> list[dict]:
        columns = batch(rows)
        block = pa.table({f.name: pa.array(columns[f.name], f.type) for f in READ_SCHEMA if f.name in columns})
        return writer.write(block, {SCORES: columns[SCORES]}).to_pylist()

    receipts.rows = lambda pieces: read_rows(fs, output, pieces)
    return receipts


def unfinished(collector: ShardCollector) -> list[str]:
    """Shards with rows or an end row but not yet whole."""
    return sorted((set(collector.covered) | set(collector.ends)) - collector.done)


def test_a_shard_is_whole_when_its_end_and_all_its_samples_arrived(scored):
    c = ShardCollector()
    assert c.add(scored([(SAMPLE, "a", 0), (SAMPLE, "b", 0)])) == []
    assert c.add(scored([(SAMPLE, "a", 1), (END, "a", 2)])) == ["a"]
    pieces, end = c.pop("a")
    assert end == ShardEnd(2, COMPLETE) and list(scored.rows(pieces)["seq"]) == [0, 1]
    assert unfinished(c) == ["b"]  # b never got its end row
    assert c.images_by_worker == {"host:1:gpu=-": 3}


def test_the_end_row_may_arrive_before_the_samples(scored):
    c = ShardCollector()
    assert c.add(scored([(END, "a", 2)])) == []
    assert c.add(scored([(SAMPLE, "a", 1)])) == []
    assert c.add(scored([(ERROR, "a", 0)])) == ["a"]
    pieces, _ = c.pop("a")
    assert list(scored.rows(pieces)["kind"]) == [ERROR, SAMPLE] and unfinished(c) == []


def test_a_row_delivered_twice_is_kept_once(scored):
    c = ShardCollector()
    c.add(scored([(SAMPLE, "a", 0), (SAMPLE, "a", 1)]))
    assert c.add(scored([(SAMPLE, "a", 1), (END, "a", 2)])) == ["a"]  # a re-run task sent seq 1 again
    pieces, _ = c.pop("a")
    assert list(scored.rows(pieces)["seq"]) == [0, 1] and c.images_by_worker["host:1:gpu=-"] == 2
    assert c.add(scored([(SAMPLE, "a", 0)])) == [] and unfinished(c) == []  # after the hand-over: ignored


def test_a_count_that_never_matches_never_commits(scored):
    c = ShardCollector()
    assert c.add(scored([(SAMPLE, "a", 0), (END, "a", 3)])) == []
    assert c.add(scored([(SAMPLE, "a", 0)])) == []  # the same row again does not make up the count
    assert unfinished(c) == ["a"]


def test_a_piece_whose_bytes_changed_is_never_read(scored, tmp_path):
    c = ShardCollector()
    c.add(scored([(SAMPLE, "a", 0), (END, "a", 1)]))
    pieces, _ = c.pop("a")
    with open(tmp_path / "out" / pieces[0].path, "r+b") as piece:
        piece.seek(-20, os.SEEK_END)
        piece.write(b"x")
    with pytest.raises(StorageError, match="not the bytes their worker wrote"):
        scored.rows(pieces)


@pytest.mark.parametrize(
    "seqs, ranges", [([], []), ([3], [3, 4]), ([0, 1, 2, 5, 6, 9], [0, 3, 5, 7, 9, 10]), ([4, 2, 3, 3], [2, 5])]
)
def test_a_receipt_names_its_rows_as_ranges(seqs, ranges):
    assert seq_ranges(np.array(seqs, dtype=np.int64)) == ranges


def test_the_coverage_of_a_shard_counts_each_seq_once():
    coverage = SeqCoverage()
    assert [coverage.add(*r) for r in [(0, 5), (3, 8), (10, 12), (8, 10), (0, 12), (20, 21)]] == [5, 3, 2, 2, 0, 1]
    assert coverage.count == 13 and (coverage.starts, coverage.stops) == ([0, 20], [12, 21])


@pytest.fixture
def model(tiny_models):
    return load_model_info(tiny_models["small"])


def shard_rows(model, kinds: list[str]) -> dict[str, np.ndarray]:
    rows = batch([(kind, "s", seq) for seq, kind in enumerate(kinds)], heads=len(model.heads))
    rows["meta"] = np.array([json.dumps({"age": 30 + i}) for i in range(len(kinds))], dtype=object)
    for name in ("stage", "error_type", "message"):
        rows[name] = np.array(["decode" if k == ERROR else None for k in kinds], dtype=object)
    order = np.array([2, 0, 1])  # arrival order differs from read order
    return {name: rows[name][order] for name in COLLECTED_COLUMNS}


def test_commit_writes_labels_errors_then_the_create_only_record(model, tmp_path):
    fs, output = filesystem(str(tmp_path), StorageOptions())
    rows = shard_rows(model, [SAMPLE, ERROR, SAMPLE])
    options = LabelOptions(meta_fields=("age",))
    outcome = commit_shard(fs, output, SHARD, rows, ShardEnd(3, COMPLETE), model, options, ATTEMPT)
    assert (outcome.samples, outcome.labels, outcome.errors, outcome.status) == (3, 2, 1, COMPLETE)
    labels = pq.read_table(tmp_path / label_file("s"))
    assert labels.column_names[:2] == list(FIXED_LABEL_COLUMNS[:2]) and labels.column("key").to_pylist() == ["k0", "k2"]
    assert labels.column("age").to_pylist() == [30, 32]
    assert pq.read_table(tmp_path / error_file("s")).column_names == list(ERROR_COLUMNS)
    record = json.loads((tmp_path / commit_file("s")).read_text())
    assert record["model_id"] == model.model_id and set(record["files"]) == {label_file("s"), error_file("s")}
    again = commit_shard(fs, output, SHARD, rows, ShardEnd(3, COMPLETE), model, options, ATTEMPT)
    assert again.reason.startswith("already committed by another run")


def test_an_incomplete_shard_writes_files_but_no_record(model, tmp_path):
    fs, output = filesystem(str(tmp_path), StorageOptions())
    rows = shard_rows(model, [SAMPLE, SAMPLE, SAMPLE])
    outcome = commit_shard(fs, output, SHARD, rows, ShardEnd(3, INCOMPLETE, "cut"), model, LabelOptions(), ATTEMPT)
    assert outcome.status == INCOMPLETE and outcome.reason == "cut"
    assert (tmp_path / incomplete_file(label_file("s"))).exists()  # kept for inspection, where readers don't look
    assert not (tmp_path / label_file("s")).exists() and not (tmp_path / commit_file("s")).exists()


def test_commit_refuses_rows_that_do_not_add_up(model, tmp_path):
    fs, output = filesystem(str(tmp_path), StorageOptions())
    with pytest.raises(AssertionError, match="4 samples read but 3 labels"):
        rows = shard_rows(model, [SAMPLE] * 3)
        commit_shard(fs, output, SHARD, rows, ShardEnd(4, COMPLETE), model, LabelOptions(), ATTEMPT)


def shards(*ids: str) -> list[Shard]:
    return [Shard(f"in/{i}.tar", i, "tar") for i in ids]


def test_committed_shards_are_skipped_in_input_order():
    record = {"samples": 5, "labels": 4, "errors": 1, "location": normalised_location("in/b.tar")}
    done, todo = split_committed(shards("a", "b", "c"), {"b": record})
    assert [s.shard_id for s in todo] == ["a", "c"]
    assert done["b"].skipped and (done["b"].samples, done["b"].errors) == (5, 1)


def test_a_record_of_another_input_under_the_same_id_is_never_skipped():
    record = {"samples": 5, "labels": 5, "errors": 0, "location": normalised_location("elsewhere/b.tar")}
    with pytest.raises(UsageError, match="committed in this output for another input"):
        split_committed(shards("b"), {"b": record})


def test_shard_ids_depend_on_the_one_input_location_only(tmp_path):
    a, b = "a/shard-00000.tar", "b/shard-00000.tar"
    assert shard_id(a).startswith("shard-00000-") and shard_id(a) != shard_id(b)
    assert shard_id(a) == shard_id(os.path.abspath(a)) == shard_id(f"file://{os.path.abspath(a)}")
    signed = "https://host/bucket/s.tar?X-Amz-Signature=CANARY&X-Amz-Expires=60"
    assert shard_id(signed) == shard_id("https://host/bucket/s.tar") and "CANARY" not in normalised_location(signed)
    assert shard_id("s3://KEY:SECRET@bucket/s.tar") == shard_id("s3://bucket/s.tar")


def test_the_first_run_claims_the_label_options_and_later_runs_must_keep_them(model, tmp_path):
    fs, output = filesystem(str(tmp_path), StorageOptions())
    first = label_options(model, LabelOptions(meta_fields=("age",)))
    claim_label_options(fs, output, first, {})
    claim_label_options(fs, output, first, {"a": {}})  # the same options: fine
    with pytest.raises(UsageError, match=r"--embedding off, this run would give on"):
        claim_label_options(fs, output, label_options(model, LabelOptions(meta_fields=("age",), embedding=True)), {})
    with pytest.raises(UsageError, match=r"was scored with --softmax off, this run would give on"):
        claim_label_options(fs, output, label_options(model, LabelOptions(meta_fields=("age",), softmax=True)), {})
    with pytest.raises(UsageError, match=r'--meta-fields \["age"\], this run would give \[\]'):
        claim_label_options(fs, output, label_options(model, LabelOptions()), {})
    with pytest.raises(UsageError, match=r"holds labels from another model \([0-9a-f]{12}\.\.\.\)"):
        claim_label_options(fs, output, {**first, "model_id": "0" * 64}, {})


def test_options_dropped_on_a_rerun_are_refused_too(model, tmp_path):
    fs, output = filesystem(str(tmp_path), StorageOptions())
    claim_label_options(fs, output, label_options(model, LabelOptions(softmax=True, embedding=True)), {})
    with pytest.raises(UsageError, match=r"--softmax on, this run would give off"):
        claim_label_options(fs, output, label_options(model, LabelOptions(embedding=True)), {})
    with pytest.raises(UsageError, match=r"--exact-decode off, this run would give on"):
        exact = LabelOptions(softmax=True, embedding=True, exact_decode=True)
        claim_label_options(fs, output, label_options(model, exact), {})


def test_labels_without_an_options_record_are_not_added_to(model, tmp_path):
    fs, output = filesystem(str(tmp_path), StorageOptions())
    with pytest.raises(UsageError, match="without a record of their options"):
        claim_label_options(fs, output, label_options(model, LabelOptions()), {"a": {}})
    assert not (tmp_path / "_label_options.json").exists()


def test_an_unreadable_record_is_redone_and_a_stopped_publish_is_finished(model, tmp_path):
    fs, output = filesystem(str(tmp_path), StorageOptions())
    (tmp_path / "_commits").mkdir()
    (tmp_path / commit_file("empty")).write_text("")
    rows = shard_rows(model, [SAMPLE, SAMPLE, SAMPLE])
    commit_shard(fs, output, SHARD, rows, ShardEnd(3, COMPLETE), model, LabelOptions(), ATTEMPT)
    published = (tmp_path / label_file("s")).read_bytes()
    # as if the run had stopped between its record and the move into labels/
    staged = tmp_path / "_staging" / ATTEMPT / label_file("s")
    (tmp_path / label_file("s")).rename(staged)
    records, warnings = load_commits(fs, output)
    assert set(records) == {"s"} and not (tmp_path / commit_file("empty")).exists()
    assert (tmp_path / label_file("s")).read_bytes() == published and not staged.exists()
    assert [w.split(":")[0] for w in warnings] == ["empty", "s"]


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


def test_flat_option_names_land_in_their_groups():
    config = score_config(["x.tar"], "out", "m", batch_size=8, meta_fields=["age"], progress="off", overwrite=True)
    assert config.engine.batch_size == 8 and config.labels.meta_fields == ("age",)
    assert config.presentation.progress == "off" and config.overwrite
    with pytest.raises(UsageError, match="unknown options batchsize"):
        score_config(["x.tar"], "out", "m", batchsize=8)


def test_every_option_name_is_defined_once():
    from dataclasses import fields

    from emonet_batch.job.config import EngineOptions
    from emonet_batch.run.config import Presentation

    names = [f.name for kind in (LabelOptions, EngineOptions, Presentation) for f in fields(kind)]
    assert len(names) == len(set(names)) and set(names) <= set(OPTION_GROUPS)


def test_each_stage_adds_and_drops_the_columns_it_declares(model, tmp_path):
    """read -> decode -> infer on one shard without Ray, checked against each stage's StageColumns."""
    import socket

    from emonet_batch.devtools.shards import write_shards
    from emonet_batch.job.decode import DECODE_COLUMNS, decode_batch
    from emonet_batch.job.infer import InferStage, SessionOptions, infer_columns
    from emonet_batch.job.read import row_blocks
    from emonet_batch.job.rows import READ_SCHEMA

    from .shardkit import odd_samples

    (path,) = write_shards(odd_samples()[:3], tmp_path, 3)
    block = next(row_blocks(Shard(str(path), "s", "tar"), StorageOptions(), rows_per_block=64))
    assert block.column_names == READ_SCHEMA.names
    read = {name: block.column(name).to_numpy(zero_copy_only=False) for name in block.column_names}
    decoded = decode_batch(dict(read), model.image_size, model.resize_filter, 10**8, True)
    assert set(decoded) == set(read) - set(DECODE_COLUMNS.drops) | set(DECODE_COLUMNS.gives)
    stage = InferStage(str(model.directory), SessionOptions(), True, True, socket.gethostname())
    inferred = {name: values for name, values in decoded.items() if name != "pixels"}
    inferred.update(stage.outputs(decoded["kind"] == SAMPLE, decoded["pixels"]))
    declared = infer_columns(model, with_embedding=True)
    assert set(inferred) == set(decoded) - set(declared.drops) | set(declared.gives)
    assert list(inferred["kind"]) == [SAMPLE, ERROR, ERROR, END]  # good, corrupt (decode), zero bytes (decode), end
    assert np.isfinite(inferred["scores"][0]).all() and np.isnan(inferred["scores"][1:]).all()


def test_stages_that_do_not_fit_fail_when_the_plan_is_built(model):
    from emonet_batch.errors import EmonetError
    from emonet_batch.job.infer import infer_columns
    from emonet_batch.job.rows import check_stages, piece_columns
    from emonet_batch.job.sources import ImageSource

    source = ImageSource(StorageOptions(), 32, None, model.image_size, model.resize_filter, 10**8, True)
    given = [*source.row_schema().names, source.input_column]
    stages = [("infer", infer_columns(model, with_embedding=False)), ("pieces", piece_columns(with_embedding=True))]
    with pytest.raises(EmonetError, match="pieces takes embedding, given by no stage before"):
        check_stages(given, stages)
    stages[1] = ("pieces", piece_columns(with_embedding=False))
    assert {"scores", "worker", "key"} <= check_stages(given, stages)
    with pytest.raises(EmonetError, match="infer takes pixels"):
        check_stages([name for name in given if name != "pixels"], stages)


def race(model, directory, contenders: dict[str, LabelOptions]) -> dict:
    """Commit one shard from several attempts at once (threads released together); their outcomes."""
    import threading

    fs, output = filesystem(str(directory), StorageOptions())
    start, outcomes = threading.Barrier(len(contenders)), {}

    def attempt(name, options):
        rows = shard_rows(model, [SAMPLE, ERROR, SAMPLE])
        start.wait()
        outcomes[name] = commit_shard(fs, output, SHARD, rows, ShardEnd(3, COMPLETE), model, options, name)

    threads = [threading.Thread(target=attempt, args=item) for item in contenders.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_two_attempts_racing_on_one_shard_leave_one_commit_whose_hashes_hold(model, tmp_path):
    """Any interleaving: one record, and the published bytes are the ones it names (the attempts' bytes differ)."""
    from emonet_batch.job.verify import verify_output

    for round_ in range(12):
        directory = tmp_path / str(round_)
        outcomes = race(model, directory, {"plain": LabelOptions(), "centered": LabelOptions(centered=True)})
        assert sorted(o.reason is None for o in outcomes.values()) == [False, True]
        assert verify_output(*filesystem(str(directory), StorageOptions())) == {}
        winner = json.loads((directory / commit_file("s")).read_text())["attempt"]
        assert outcomes[winner].reason is None


class FlakyStream:
    """A file that fails with a storage fault after `fail_after` bytes."""

    def __init__(self, data: bytes, fail_after: int | None):
        import io

        self.inner, self.fail_after = io.BytesIO(data), fail_after

    def read(self, size=-1):
        if self.fail_after is not None and self.inner.tell() + max(size, 0) > self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        return self.inner.read(size)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_storage_fault_while_reading_is_retried_without_giving_a_row_twice(tmp_path, monkeypatch):
    from emonet_batch.devtools.shards import write_shards
    from emonet_batch.job import read

    from .shardkit import odd_samples

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


def test_two_runs_claiming_an_empty_output_at_once_get_one_set_of_options(model, tmp_path):
    import threading

    fs, output = filesystem(str(tmp_path), StorageOptions())
    wanted = {
        "plain": label_options(model, LabelOptions()),
        "softmax": label_options(model, LabelOptions(softmax=True)),
    }
    start, refused = threading.Barrier(2), []

    def claim(name):
        start.wait()
        try:
            claim_label_options(fs, output, wanted[name], {})
        except UsageError:
            refused.append(name)

    threads = [threading.Thread(target=claim, args=(name,)) for name in wanted]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (loser,) = refused
    (winner,) = set(wanted) - {loser}
    assert json.loads((tmp_path / "_label_options.json").read_text()) == wanted[winner]


def test_progress_ticks_on_its_own_and_shows_each_phase():
    """Log mode: a line every `log_every` seconds whatever happens, each phase as it starts, and the clock moves."""
    import io
    import time

    from emonet_batch.run.progress import Counters, Progress

    stream, counters = io.StringIO(), Counters(total_shards=2)
    progress = Progress(counters, "log", log_every=0.05, stream=stream)
    progress.phase("starting Ray")
    time.sleep(0.3)  # no batch arrives meanwhile
    counters.scored = 8
    progress.finished()
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "emonet-batch: starting Ray"
    assert sum(line.startswith("emonet-batch: images 0 scored") for line in lines) >= 3
    assert lines[-1].startswith("emonet-batch: finished: images 8 scored") and "| 0 s" in lines[-1]


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
    assert earlier_runs(fs, output) == [{"exit_code": 1}] * 2
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

"""What a rerun skips, and the label options every run of an output must keep. No Ray."""

import json

import pytest

from emonet_batch.errors import UsageError
from emonet_batch.job.commit import commit_shard
from emonet_batch.job.config import LabelOptions, StorageOptions
from emonet_batch.job.inputs import normalised_location
from emonet_batch.job.layout import (
    commit_file,
    label_file,
)
from emonet_batch.job.rows import (
    COMPLETE,
    SAMPLE,
    ShardEnd,
)
from emonet_batch.job.storage import filesystem
from emonet_batch.run.resume import claim_label_options, label_options, load_commits, split_committed

from ..rowkit import ATTEMPT, SHARD, shard_rows, shards


def test_committed_shards_are_skipped_in_input_order():
    record = {"samples": 5, "labels": 4, "errors": 1, "location": normalised_location("in/b.tar")}
    done, todo = split_committed(shards("a", "b", "c"), {"b": record})
    assert [s.shard_id for s in todo] == ["a", "c"]
    assert done["b"].skipped and (done["b"].samples, done["b"].errors) == (5, 1)


def test_a_record_of_another_input_under_the_same_id_is_never_skipped():
    record = {"samples": 5, "labels": 5, "errors": 0, "location": normalised_location("elsewhere/b.tar")}
    with pytest.raises(UsageError, match="committed in this output for another input"):
        split_committed(shards("b"), {"b": record})


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


def test_a_folder_no_run_wrote_labels_into_is_refused(tmp_path):
    """A dataset's own `labels/` (YOLO's) is neither mixed with label files nor removed by --overwrite."""
    from emonet_batch.run.resume import check_ours

    fs, _ = filesystem(str(tmp_path), StorageOptions())
    check_ours(fs, str(tmp_path / "new"), "new")  # not there yet
    (tmp_path / "shard-00000.tar").write_bytes(b"")
    check_ours(fs, str(tmp_path), "data")  # shards beside an output are fine
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "img1.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(UsageError) as raised:
        check_ours(fs, str(tmp_path), "data")
    assert str(raised.value) == (
        "data holds labels that no emonet-batch run wrote (it has no _label_options.json): give the labels another "
        "--output"
    )
    (tmp_path / "_label_options.json").write_text("{}")
    check_ours(fs, str(tmp_path), "data")  # an output of this tool

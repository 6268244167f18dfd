"""The scoring job end to end on the embedded Ray runtime, with the tiny synthetic model."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from emonet_batch.devtools.samples import demo_samples
from emonet_batch.errors import UsageError
from emonet_batch.job.config import LabelOptions, StorageOptions
from emonet_batch.job.inputs import shard_id
from emonet_batch.job.storage import filesystem
from emonet_batch.model.record import load_model_info
from emonet_batch.run.config import score_config
from emonet_batch.run.resume import claim_label_options, label_options
from emonet_batch.run.score import run_score
from emonet_batch.taxonomy import EMOTIONS, HEAD_COLUMNS

from ..shardkit import (
    CLIENT_KEYS,
    EXPECTED_ERRORS,
    MAX_PIXELS,
    client_shard,
    good_shards,
    manifest,
    odd_samples,
    parquet_shard,
    read_labels,
    run_history,
    shard_outcomes,
    truncate,
)


def score(tmp_path, model, inputs, **options):
    """run_score without stats and report (they have their own tests; the demo and S3 tests run them whole)."""
    options = {"progress": "off", "batch_size": 8, "stats": False, **options}
    config = score_config(
        tuple(str(i) for i in inputs),
        str(tmp_path / options.pop("out", "out")),
        str(model),
        **options,
    )
    return run_score(config)


def test_scores_shards_into_the_documented_layout(ray_runtime, tiny_models, tmp_path):
    shards = good_shards(tmp_path / "in", shards=3, per_shard=7)
    result = score(
        tmp_path,
        tiny_models["small"],
        [tmp_path / "in" / "shard-{00000..00002}.tar"],
        meta_fields=("gender", "age", "ethnicity"),
        centered=True,
        softmax=True,
        embedding=True,
    )
    assert result.exit_code == 0
    out = tmp_path / "out"
    ids = [shard_id(str(s)) for s in shards]
    assert sorted(p.name for p in (out / "labels").iterdir()) == [f"{i}.parquet" for i in ids]
    assert sorted(p.name for p in (out / "_commits").iterdir()) == [f"{i}.json" for i in ids]
    assert all(i.startswith(s.stem + "-") for i, s in zip(ids, shards))
    assert not (out / "errors").exists()
    table = pq.read_table(out / "labels" / f"{ids[1]}.parquet")
    assert table.column_names[:2] == ["key", "shard"] and table.column_names[2:46] == list(HEAD_COLUMNS)
    assert table.num_rows == 7 and table.column("key").to_pylist() == [f"face-{i:05d}" for i in range(7, 14)]
    schema = table.schema
    assert str(schema.field("amusement").type) == "float" and str(schema.field("top_prob").type) == "float"
    assert str(schema.field("shard").type).startswith("dictionary") and str(
        schema.field("top_emotion").type
    ).startswith("dictionary")
    assert schema.field("embedding").type.list_size == 64
    assert set(table.column("top_emotion").to_pylist()) <= set(EMOTIONS)
    assert schema.metadata[b"emonet_batch.model_id"].decode() == result.manifest["model"]["id"]
    tower = load_model_info(tiny_models["small"]).tower_id  # what a heads-only model is checked against
    assert schema.metadata[b"emonet_batch.tower_id"].decode() == tower
    rows = table.to_pandas()
    np.testing.assert_allclose(rows.filter(like="_softmax").iloc[:, :40].sum(axis=1), 1.0, atol=1e-5)
    assert rows["valence_softmax"].isna().all()
    assert rows["age"].dtype.kind == "i" and set(rows["gender"]) <= {"female", "male"}
    record = json.loads((out / "_commits" / f"{ids[1]}.json").read_text())
    assert (record["samples"], record["labels"], record["errors"]) == (7, 7, 0)
    assert record["location"] == f"file://{shards[1]}"
    assert shard_outcomes(out)[ids[1]]["status"] == "complete"
    assert result.figures["images"] == 21 and result.figures["images_per_s"] > 0


def test_label_files_read_in_pandas_polars_and_duckdb(ray_runtime, tiny_models, tmp_path):
    import duckdb
    import pandas as pd
    import polars as pl

    good_shards(tmp_path / "in", shards=2, per_shard=4)
    score(tmp_path, tiny_models["small"], [tmp_path / "in"], meta_fields=("gender",), embedding=True)
    labels = tmp_path / "out" / "labels"
    assert pd.read_parquet(labels).shape[0] == 8
    assert pl.read_parquet(labels / "*.parquet").select(pl.col("top_emotion").cast(pl.Utf8)).height == 8
    count, keys = duckdb.sql(f"select count(*), count(distinct key) from '{labels}/*.parquet'").fetchall()[0]
    assert count == keys == 8


def test_rerun_skips_committed_shards_and_labels_are_byte_identical_whatever_the_batch(
    ray_runtime, tiny_models, tmp_path
):
    good_shards(tmp_path / "in", shards=2, per_shard=5)
    first = score(tmp_path, tiny_models["small"], [tmp_path / "in"])
    labels = {p.name: p.read_bytes() for p in (tmp_path / "out" / "labels").iterdir()}
    again = score(tmp_path, tiny_models["small"], [tmp_path / "in"])
    assert again.figures["shards_skipped"] == 2 and again.figures["images"] == 0 and again.exit_code == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "out" / "labels").iterdir()} == labels
    # other batches (3 images per inference call, 2 per decode call): the same bytes, as each image is scored alone
    score(tmp_path, tiny_models["small"], [tmp_path / "in"], out="other", batch_size=3, decode_batch_size=2)
    assert {p.name: p.read_bytes() for p in (tmp_path / "other" / "labels").iterdir()} == labels
    # a piece per row, and one piece per shard: written on the workers, assembled into the same bytes
    for batch_size in (1, 1024):
        score(tmp_path, tiny_models["small"], [tmp_path / "in"], out=f"batch-{batch_size}", batch_size=batch_size)
        assert {p.name: p.read_bytes() for p in (tmp_path / f"batch-{batch_size}" / "labels").iterdir()} == labels
    assert first.manifest["totals"] == again.manifest["totals"] == {"samples": 10, "labels": 10, "errors": 0}


def test_another_model_is_refused_unless_overwrite(ray_runtime, tiny_models, tmp_path):
    good_shards(tmp_path / "in", shards=1, per_shard=3)
    score(tmp_path, tiny_models["small"], [tmp_path / "in"])
    with pytest.raises(UsageError, match="another model"):
        score(tmp_path, tiny_models["large"], [tmp_path / "in"])
    result = score(tmp_path, tiny_models["large"], [tmp_path / "in"], overwrite=True)
    assert result.figures["shards_scored"] == 1 and result.manifest["model"]["head_size"] == "large"
    (tmp_path / "in" / "labels").mkdir()  # a dataset's own labels, beside its shards
    (tmp_path / "in" / "labels" / "img1.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(UsageError, match="holds labels that no emonet-batch run wrote"):
        score(tmp_path, tiny_models["large"], [tmp_path / "in"], out="in", overwrite=True)
    assert (tmp_path / "in" / "labels" / "img1.txt").exists()


def test_bad_input_is_accounted_for_exactly(ray_runtime, tiny_models, tmp_path):
    from emonet_batch.devtools.shards import write_shards

    odd = write_shards(odd_samples(), tmp_path / "in", samples_per_shard=100, prefix="odd")[0]
    good = good_shards(tmp_path / "in", shards=1, per_shard=6)[0]
    truncated = tmp_path / "in" / "cut.tar"
    shutil.copy(good, truncated)
    truncate(truncated, 0.55)
    # inputs that cannot work stop the run before it starts, in one line, leaving nothing behind
    missing, text = tmp_path / "in" / "missing.tar", tmp_path / "in" / "notes.tar"
    text.write_text("a text file named .tar")
    for bad, message in ((missing, "input not found: .*missing.tar"), (text, "not a tar file: .*notes.tar")):
        with pytest.raises(UsageError, match=message):
            score(tmp_path, tiny_models["small"], [odd, truncated, bad], max_pixels=MAX_PIXELS)
    assert not (tmp_path / "out" / "manifest.json").exists() and not (tmp_path / "out" / "_label_options.json").exists()
    client = client_shard(tmp_path / "in" / "client.tar")  # written by webdataset's TarWriter, not by us
    result = score(tmp_path, tiny_models["small"], [odd, truncated, client], max_pixels=MAX_PIXELS)
    assert result.exit_code == 1  # an incomplete shard
    shards = shard_outcomes(tmp_path / "out")
    odd_id, cut_id = shard_id(str(odd)), shard_id(str(truncated))

    assert shards[odd_id] == {**shards[odd_id], "status": "complete", "samples": 13, "labels": 7, "errors": 6}
    errors = pq.read_table(tmp_path / "out" / "errors" / f"{odd_id}.parquet").to_pylist()
    assert {e["key"]: (e["stage"], e["error_type"]) for e in errors} == EXPECTED_ERRORS
    assert all(e["message"] and e["shard"] == odd_id for e in errors)
    labelled = pq.read_table(tmp_path / "out" / "labels" / f"{odd_id}.parquet").column("key").to_pylist()
    assert labelled == ["good", "grey", "cmyk", "rgba", "sixteen", "rotated", "webp"]

    client_id = shard_id(str(client))
    assert shards[client_id] == {**shards[client_id], "status": "complete", "samples": 4, "labels": 3, "errors": 1}
    labelled = pq.read_table(tmp_path / "out" / "labels" / f"{client_id}.parquet").column("key").to_pylist()
    assert labelled == [read for read, error in CLIENT_KEYS.values() if error is None]

    cut = shards[cut_id]
    assert cut["status"] == "incomplete" and "truncated" in cut["reason"]
    assert 0 < cut["samples"] < 6 and cut["labels"] + cut["errors"] == cut["samples"]
    assert not (tmp_path / "out" / "_commits" / f"{cut_id}.json").exists()
    assert (tmp_path / "out" / "_incomplete" / "labels" / f"{cut_id}.parquet").exists()

    # the incomplete shard is retried; the complete ones are not read again
    again = score(tmp_path, tiny_models["small"], [odd, truncated, client], max_pixels=MAX_PIXELS)
    assert again.figures["shards_skipped"] == 2 and again.figures["shards_scored"] == 1


def test_error_rate_decides_the_exit_code(ray_runtime, tiny_models, tmp_path):
    from emonet_batch.devtools.shards import write_shards

    shard = write_shards(odd_samples(), tmp_path / "in", samples_per_shard=100)[0]
    result = score(tmp_path, tiny_models["small"], [shard], max_pixels=MAX_PIXELS)
    assert result.exit_code == 3
    assert result.exit_reason == (
        "6 error rows in 13 samples (46.15%), above --max-error-rate 1.00%: bad_metadata 1, corrupt 1, empty 1, "
        "missing_image 1, not_an_image 1, too_many_pixels 1"
    )
    assert result.manifest["exit"] == {"code": 3, "reason": result.exit_reason}
    from emonet_batch.analysis.report import errors_html
    from emonet_batch.job.config import StorageOptions
    from emonet_batch.job.storage import filesystem
    from emonet_batch.job.verify import committed_shards

    fs, out = filesystem(str(tmp_path / "out"), StorageOptions())
    section = errors_html(fs, out, committed_shards(fs, out))  # the report's errors section
    assert "<h3>decode: corrupt: 1</h3>" in section and "corrupt / " not in section and "/ corrupt:" in section
    lenient = score(tmp_path, tiny_models["small"], [shard], max_pixels=MAX_PIXELS, out="o2", max_error_rate=0.5)
    assert lenient.exit_code == 0 and "within --max-error-rate 50.00%" in lenient.exit_reason
    # a rerun that skips everything keeps the history of the run that did the work
    again = score(tmp_path, tiny_models["small"], [shard], max_pixels=MAX_PIXELS, out="o2", max_error_rate=0.5)
    runs = run_history(tmp_path / "o2")
    assert [r["shards_scored"] for r in runs] == [1, 0] and runs[0]["images"] == 13
    assert again.exit_reason == lenient.exit_reason  # the error types come back from the commit record


def test_parquet_shards_with_image_columns(ray_runtime, tiny_models, tmp_path):
    (tmp_path / "in").mkdir()
    shard = parquet_shard(tmp_path / "in" / "hq-0000.parquet", 5)
    result = score(tmp_path, tiny_models["small"], [shard], meta_fields=("emotion", "age"))
    outcome = result.outcomes[shard_id(str(shard))].as_dict()
    assert outcome | {"samples": 5, "labels": 4, "errors": 1} == outcome
    labels = read_labels(tmp_path / "out").to_pydict()
    assert labels["key"] == ["img_0000", "img_0002", "img_0003", "img_0004"]
    assert labels["age"] == [20, 22, 23, 24]
    errors = pq.read_table(tmp_path / "out" / "errors" / f"{shard_id(str(shard))}.parquet").to_pylist()
    assert [(e["key"], e["error_type"]) for e in errors] == [("img_0001", "missing_image")]
    assert "img_0001.jpg is not beside the shard" in errors[0]["message"]

    # the image file beside the shard is read by its path; keys from a column of the operator's choice
    from emonet_batch.devtools.samples import encode, face_image

    (tmp_path / "in" / "img_0001.jpg").write_bytes(encode(face_image(1, size=96), "JPEG"))
    again = score(tmp_path, tiny_models["small"], [shard], key_column="emotion", out="by-emotion")
    assert again.figures["labels"] == 5 and again.figures["errors"] == 0
    assert read_labels(tmp_path / "by-emotion").column("key").to_pylist() == ["e0", "e1", "e2", "e0", "e1"]
    with pytest.raises(UsageError, match="--key-column"):  # the output was scored with another key column
        score(tmp_path, tiny_models["small"], [shard], out="by-emotion")


def test_usage_errors(ray_runtime, tiny_models, tmp_path):
    good_shards(tmp_path / "in", shards=1, per_shard=2)
    with pytest.raises(UsageError, match="no shards"):
        score(tmp_path, tiny_models["small"], [tmp_path / "in" / "*.parquet"])
    with pytest.raises(UsageError, match="would overwrite output columns: amusement"):
        score(tmp_path, tiny_models["small"], [tmp_path / "in"], meta_fields=("amusement",))
    with pytest.raises(UsageError, match="no input is one"):  # tars only: the key column would go unused
        score(tmp_path, tiny_models["small"], [tmp_path / "in"], key_column="id")
    with pytest.raises(UsageError, match="lacks 1 GPU for this run and this machine's own Ray runtime cannot grow"):
        score(tmp_path, tiny_models["small"], [tmp_path / "in"], gpus_per_worker=1.0)


def test_a_run_claims_its_label_options_only_once_ray_is_up(tiny_models, tmp_path, monkeypatch):
    good_shards(tmp_path / "in", shards=1, per_shard=2)

    def unreachable(verbose=False):
        raise UsageError("cannot attach to the Ray cluster (RAY_ADDRESS=auto)")

    monkeypatch.setattr("emonet_batch.edge.runtime.ensure_ray", unreachable)
    with pytest.raises(UsageError, match="cannot attach"):
        score(tmp_path, tiny_models["small"], [tmp_path / "in"], softmax=True)
    assert not (tmp_path / "out" / "_label_options.json").exists()  # so the next run may choose other options
    fs, output = filesystem(str(tmp_path / "out"), StorageOptions())
    claim_label_options(fs, output, label_options(load_model_info(tiny_models["small"]), LabelOptions()), {})
    with pytest.raises(UsageError, match="--softmax off, this run would give on"):  # refused before Ray starts
        score(tmp_path, tiny_models["small"], [tmp_path / "in"], softmax=True)


def test_cli_score_summary_and_one_line_errors(ray_runtime, tiny_models, tmp_path, capsys):
    from emonet_batch.cli import main

    good_shards(tmp_path / "in", shards=2, per_shard=3)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two shards\n{tmp_path / 'in' / 'shard-00000.tar'}\n{tmp_path / 'in' / 'shard-00001.tar'}\n")
    args = [
        "score",
        f"@{listing}",
        "--output",
        str(tmp_path / "out"),
        "--model",
        str(tiny_models["small"]),
        "--progress",
        "log",
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "complete  2      6        6       0" in captured.out and "exit code 0" in captured.out
    assert "emonet-batch: finished: images 6" in captured.err
    assert (
        main(["score", str(tmp_path / "nope"), "--output", str(tmp_path / "o"), "--model", str(tiny_models["small"])])
        == 2
    )
    assert capsys.readouterr().err.strip() == f"emonet-batch: error: input not found: {tmp_path / 'nope'}"
    (tmp_path / "a-file").write_text("in the way")
    unwritable = str(tmp_path / "a-file" / "out")
    assert main(["score", str(tmp_path / "in"), "--output", unwritable, "--model", str(tiny_models["small"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"emonet-batch: error: cannot write to the output {unwritable}") and err.count("\n") == 1
    assert main(["score", str(tmp_path / "in"), "--output", str(tmp_path / "o"), "--model", str(tmp_path)]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert (
        main(
            [
                "score",
                str(tmp_path / "in"),
                "--output",
                str(tmp_path / "o"),
                "--model",
                str(tiny_models["small"]),
                "--batch-size",
                "0",
            ]
        )
        == 2
    )


def test_an_inaccurate_model_scores_only_when_allowed(ray_runtime, tiny_models, tmp_path):
    from ..job.test_infer import with_parity

    loose = with_parity(tiny_models["small"], tmp_path / "loose", max_abs_score_diff=0.08)
    good_shards(tmp_path / "in", shards=1, per_shard=2)
    with pytest.raises(UsageError, match="--allow-inaccurate-model"):
        score(tmp_path, loose.directory, [tmp_path / "in"])
    assert score(tmp_path, loose.directory, [tmp_path / "in"], allow_inaccurate_model=True).exit_code == 0


def test_two_folders_with_equal_shard_names_are_two_shards(ray_runtime, tiny_models, tmp_path):
    """The second folder's shard-00000.tar is scored, not skipped as the first one's."""
    first = good_shards(tmp_path / "a", shards=1, per_shard=3)[0]
    second = write_shards_of(tmp_path / "b", keys=["other-0", "other-1"])
    assert first.name == second.name
    score(tmp_path, tiny_models["small"], [first])
    result = score(tmp_path, tiny_models["small"], [second])
    assert result.figures["shards_scored"] == 1 and result.figures["shards_skipped"] == 0
    keys = sorted(read_labels(tmp_path / "out").column("key").to_pylist())
    assert keys == ["face-00000", "face-00001", "face-00002", "other-0", "other-1"]


def write_shards_of(directory, keys):
    from emonet_batch.devtools.shards import write_shards

    samples = [(key, members) for key, (_, members) in zip(keys, demo_samples(len(keys), size=64))]
    return write_shards(samples, directory, len(keys))[0]


def test_unreadable_and_tampered_records_are_found_and_redone(ray_runtime, tiny_models, tmp_path, capsys):
    from emonet_batch.cli import main

    shards = good_shards(tmp_path / "in", shards=3, per_shard=3)
    out = tmp_path / "out"
    args = ["score", str(tmp_path / "in"), "--output", str(out), "--model", str(tiny_models["small"])]
    args += ["--progress", "off", "--no-stats"]
    assert main(args) == 0
    empty, tampered = shard_id(str(shards[0])), shard_id(str(shards[1]))
    (out / "_commits" / f"{empty}.json").write_text("")  # as a crash between create and write once left it
    shutil.rmtree(out / "_commits_checkpoints")  # a run that crashed there wrote no checkpoint after the record
    assert main(args) == 0
    summary = capsys.readouterr().out
    assert f"{empty}: its commit record could not be read; the shard is scored again" in summary
    assert json.loads((out / "_commits" / f"{empty}.json").read_text())["samples"] == 3
    assert manifest(out)["figures"]["shards_scored"] == 1 and len(manifest(out)["warnings"]) == 1

    label = out / "labels" / f"{tampered}.parquet"
    label.write_bytes(label.read_bytes() + b"\0")
    assert main(["verify", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.out == f"{tampered}: labels/{tampered}.parquet differs from its recorded sha256\n"
    assert captured.err == "shards that differ from their commit records: 1; `score --repair` redoes them\n"
    assert main(["stats", str(out)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main([*args, "--repair"]) == 0
    assert f"{tampered}: labels/{tampered}.parquet differs" in capsys.readouterr().out
    assert main(["verify", str(out)]) == 0 and "every commit record matches" in capsys.readouterr().out


def test_reading_what_is_no_output_fails_in_one_line(tmp_path, capsys):
    """verify, stats and report of a folder no run committed to, or of a file; evaluate's annotations under a file or
    not a CSV table: one line each and exit 2, no traceback (verify had said every record matched)."""
    from emonet_batch.cli import main

    empty, a_file, not_csv = tmp_path / "empty", tmp_path / "a-file", tmp_path / "bytes.csv"
    empty.mkdir()
    a_file.write_text("in the way\n")
    not_csv.write_bytes(bytes(range(128, 256)))
    cases = [
        (["verify", str(empty)], f"no committed shards under {empty}"),
        (["verify", str(a_file)], f"no committed shards under {a_file}"),
        (["stats", str(a_file)], f"no committed shards under {a_file}"),
        (["report", str(a_file)], f"no committed shards under {a_file}"),
        (["evaluate", "--labels", str(empty), "--annotations", str(a_file / "hq.csv")], "annotations not found"),
        (["evaluate", "--labels", str(empty), "--annotations", str(not_csv)], f"annotations {not_csv} are not a CSV"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith(f"emonet-batch: error: {message}") and err.count("\n") == 1, (args, err)


def test_a_presigned_url_is_read_and_its_query_written_nowhere(ray_runtime, tiny_models, tmp_path, capsys):
    """The query reaches the server (it carries the signature) and nothing else: names, records, manifest,
    stats, report and the terminal."""
    import functools
    import http.server
    import threading

    from emonet_batch.cli import main

    good_shards(tmp_path / "in", shards=1, per_shard=3)
    queries = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            queries.append(self.path.partition("?")[2])

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=tmp_path / "in"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    canary = "Canary-Signature-5d1e"
    url = f"http://127.0.0.1:{server.server_port}/shard-00000.tar?X-Amz-Signature={canary}&X-Amz-Expires=600"
    try:
        code = main(["score", url, "--output", str(tmp_path / "out"), "--model", str(tiny_models["small"])])
    finally:
        server.shutdown()
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert any(canary in query for query in queries)
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert {p.parent.name for p in written} >= {"labels", "_commits", "stats"}
    assert not any(canary in str(p) or canary.encode() in p.read_bytes() for p in written)
    assert canary not in captured.out + captured.err
    (label,) = (tmp_path / "out" / "labels").iterdir()
    assert label.name.startswith("shard-00000-") and pq.read_table(label).num_rows == 3


def test_a_commit_that_fails_still_ends_with_a_manifest_of_every_shard(ray_runtime, tiny_models, tmp_path, monkeypatch):
    from emonet_batch.job.storage import StorageError
    from emonet_batch.run import commits

    shards = good_shards(tmp_path / "in", shards=2, per_shard=2)
    broken = shard_id(str(shards[0]))
    real_commit = commits.commit_staged

    def commit_or_fail(fs, output, shard, *args):
        if shard.shard_id == broken:
            raise StorageError("cannot write labels: OSError: the disk went away")
        return real_commit(fs, output, shard, *args)

    monkeypatch.setattr(commits, "commit_staged", commit_or_fail)
    result = score(tmp_path, tiny_models["small"], [tmp_path / "in"])
    assert result.exit_code == 1
    outcomes = shard_outcomes(tmp_path / "out")
    assert outcomes[broken]["status"] == "failed" and "the disk went away" in outcomes[broken]["reason"]
    assert outcomes[shard_id(str(shards[1]))]["status"] == "complete"


def test_two_runs_with_different_options_started_at_once_on_one_output(ray_runtime, tiny_models, tmp_path):
    """One claims the output and scores it; the other is refused in one line; the output verifies."""
    import threading

    from emonet_batch.job.config import StorageOptions
    from emonet_batch.job.storage import filesystem
    from emonet_batch.job.verify import verify_output

    good_shards(tmp_path / "in", shards=2, per_shard=3)
    start, results = threading.Barrier(2), {}

    def run(name, **options):
        start.wait()
        try:
            results[name] = score(tmp_path, tiny_models["small"], [tmp_path / "in"], **options).exit_code
        except UsageError as exc:
            results[name] = str(exc)

    threads = [
        threading.Thread(target=run, args=("plain",)),
        threading.Thread(target=run, args=("softmax",), kwargs={"softmax": True}),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(map(type, results.values()), key=str) == [int, str]
    (winner,) = [name for name, result in results.items() if result == 0]
    (refusal,) = [result for result in results.values() if isinstance(result, str)]
    assert "this run would give" in refusal and "\n" not in refusal
    labels = read_labels(tmp_path / "out")
    assert labels.num_rows == 6 and ("amusement_softmax" in labels.column_names) == (winner == "softmax")
    assert verify_output(*filesystem(str(tmp_path / "out"), StorageOptions())) == {}


def test_meta_fields_no_sample_has_are_reported_and_lists_kept_as_json(ray_runtime, tiny_models, tmp_path, capsys):
    from emonet_batch.cli import main
    from emonet_batch.devtools.shards import write_shards

    samples = [
        (key, {**members, "json": json.dumps({"gender": "female", "tags": ["calm", f"n{i}"]}).encode()})
        for i, (key, members) in enumerate(demo_samples(3, size=64))
    ]
    write_shards(samples, tmp_path / "in", 3)
    args = ["score", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model", str(tiny_models["small"])]
    assert main([*args, "--meta-fields", "gender,gendr,tags", "--no-stats", "--progress", "off"]) == 0
    out = capsys.readouterr().out
    assert "--meta-fields gendr: no sample scored in this run has it, so its column is all null" in out
    assert manifest(tmp_path / "out")["warnings"] == [
        "--meta-fields gendr: no sample scored in this run has it, so its column is all null"
    ]
    labels = read_labels(tmp_path / "out").to_pydict()
    assert [json.loads(t) for t in labels["tags"]] == [["calm", "n0"], ["calm", "n1"], ["calm", "n2"]]
    strict = ["--meta-fields", "gender,gendr,tags", "--no-stats", "--progress", "off", "--strict-meta"]
    strict_args = ["score", str(tmp_path / "in"), "--output", str(tmp_path / "strict")]
    assert main([*strict_args, "--model", str(tiny_models["small"]), *strict]) == 1
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last == f"exit code 1: --strict-meta: {manifest(tmp_path / 'out')['warnings'][0]}"

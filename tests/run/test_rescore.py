"""`emonet-batch rescore`: heads-only models over the embeddings an output stores, on the embedded Ray runtime."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from emonet_batch.cli import main
from emonet_batch.errors import UsageError
from emonet_batch.export import ExportConfig, export_model
from emonet_batch.job.inputs import normalised_location
from emonet_batch.job.verify import verify_output
from emonet_batch.model.record import load_model_info
from emonet_batch.run.config import rescore_config
from emonet_batch.run.score import run_score

from ..faultkit import kill_processes, wait_for_commits
from ..shardkit import MAX_PIXELS, good_shards, manifest, odd_samples
from .test_score import score

FAST = {"progress": "off", "stats": False, "max_error_rate": 1.0}  # the source holds 6 error rows in 23


def rescore(source, output, model, **options):
    return run_score(rescore_config(str(source), str(output), str(model), **{**FAST, **options}))


def label_files(output):
    return {p.name: pq.read_table(p) for p in sorted((output / "labels").iterdir())}


@pytest.fixture(scope="module")
def scored(tiny_models, tmp_path_factory):
    """An output scored with --embedding from shards with odd samples (error rows) and metadata; its inputs are
    then moved away, so a rescore that read an image would fail. The tests only read it."""
    from emonet_batch.devtools.shards import write_shards
    from emonet_batch.edge.runtime import ensure_ray

    ensure_ray()  # the shared runtime (conftest.ray_runtime)
    tmp_path = tmp_path_factory.mktemp("scored")

    write_shards(odd_samples(), tmp_path / "in", 13, prefix="odd")
    good_shards(tmp_path / "in", shards=2, per_shard=5)
    result = score(
        tmp_path,
        tiny_models["small"],
        [tmp_path / "in"],
        out="source",
        embedding=True,
        meta_fields=("gender", "age"),
        max_pixels=MAX_PIXELS,
        max_error_rate=1.0,
    )
    assert result.exit_code == 0
    shutil.move(tmp_path / "in", tmp_path / "moved")
    return tmp_path / "source"


def test_rescore_equals_scoring_the_images_and_carries_keys_metadata_and_errors(scored, tiny_heads, tmp_path):
    result = rescore(scored, tmp_path / "new", tiny_heads["small"], embedding=True, batch_size=5, stats=True, gallery=0)
    assert result.exit_code == 0 and result.figures["images"] == 23 and result.figures["errors"] == 6
    assert result.stats["run"]["model"]["id"] == load_model_info(tiny_heads["small"]).model_id
    # on CPU each inference actor read the shards it scored (edge/plan.reads_in_actors): one fused stage
    assert "ReadEmbeddingSource->MapBatches(ArrowInferStage)" in result.figures["stages"]
    assert (tmp_path / "new" / "stats" / "report.html").exists()
    source, new = label_files(scored), label_files(tmp_path / "new")
    assert source.keys() == new.keys() and len(source) == 3
    heads = load_model_info(tiny_heads["small"])
    for name, table in new.items():
        before = source[name]
        assert table.column_names == before.column_names  # key, shard, heads, top_*, embedding, gender, age
        for column in ("key", "shard", "gender", "age", "embedding"):
            assert table.column(column).equals(before.column(column)), column
        for head in heads.heads:
            diff = np.abs(table.column(head).to_numpy() - before.column(head).to_numpy())
            assert diff.max(initial=0) <= 1e-5, head
        assert table.schema.metadata[b"emonet_batch.model_id"].decode() == heads.model_id
        assert table.schema.metadata[b"emonet_batch.tower_id"] == before.schema.metadata[b"emonet_batch.tower_id"]
    errors = {p.name: pq.read_table(p) for p in (tmp_path / "new" / "errors").iterdir()}
    assert {n: t.to_pylist() for n, t in errors.items()} == {
        p.name: pq.read_table(p).to_pylist() for p in (scored / "errors").iterdir()
    }
    for name in source:  # the records count the same samples, for the same inputs (the report's gallery reads them)
        old, fresh = (
            json.loads((o / "_commits" / name.replace(".parquet", ".json")).read_text())
            for o in (scored, tmp_path / "new")
        )
        assert [fresh[k] for k in ("samples", "labels", "errors", "location")] == [
            old[k] for k in ("samples", "labels", "errors", "location")
        ]
        assert normalised_location(fresh["input"]) == old["location"]
    written = manifest(tmp_path / "new")
    assert written["rescored_from"] == str(scored) and written["options"]["meta_fields"] == ["gender", "age"]
    assert verify_output(*_local(tmp_path / "new")) == {}
    assert rescore(scored, tmp_path / "new", tiny_heads["small"], embedding=True).figures["shards_skipped"] == 3


def test_the_shards_a_source_left_not_complete_are_named(scored, tiny_heads, tmp_path):
    """The source's last run failed a shard (here written into its shard table): it has nothing to rescore."""
    import pyarrow as pa

    source = tmp_path / "source"
    shutil.copytree(scored, source)
    table = pq.read_table(source / "manifest.shards.parquet")
    failed = {**table.slice(0, 1).to_pylist()[0], "shard": "lost-0a1b2c3d", "status": "failed", "skipped": False}
    rows = [*table.to_pylist(), {**failed, "samples": 0, "labels": 0, "errors": 0, "reason": "cut short"}]
    pq.write_table(pa.Table.from_pylist(rows, table.schema), source / "manifest.shards.parquet")
    result = rescore(source, tmp_path / "new", tiny_heads["small"], embedding=True)
    assert result.exit_code == 0 and len(result.outcomes) == 3
    assert result.warnings == [
        "not in this rescore: 1 shard its source's last run left not complete (lost-0a1b2c3d failed); rescore "
        "again once the source has committed them"
    ]
    assert rescore(scored, tmp_path / "whole", tiny_heads["small"], embedding=True).warnings == []


def test_rescore_labels_do_not_depend_on_the_batch_any_head_set_applies_and_changed_files_fail(
    scored, tiny_heads, tmp_path
):
    rescore(scored, tmp_path / "a", tiny_heads["small"], batch_size=3)
    rescore(scored, tmp_path / "b", tiny_heads["small"], batch_size=1024)
    for name in label_files(tmp_path / "a"):
        assert (tmp_path / "a" / "labels" / name).read_bytes() == (tmp_path / "b" / "labels" / name).read_bytes()
    # other heads of the same tower, from a copy of the source with one label file changed since its commit
    tampered = tmp_path / "tampered"
    shutil.copytree(scored, tampered)
    changed = sorted((tampered / "labels").iterdir())[0]
    changed.write_bytes(changed.read_bytes() + b"\0")
    result = rescore(tampered, tmp_path / "large", tiny_heads["large"], centered=True)
    assert result.exit_code == 1 and result.manifest["model"]["head_size"] == "large"
    outcomes = {shard: outcome.status for shard, outcome in result.outcomes.items()}
    assert outcomes.pop(changed.stem) == "failed" and set(outcomes.values()) == {"complete"}
    assert "differs from its recorded sha256" in result.outcomes[changed.stem].reason
    assert sorted(p.stem for p in (tmp_path / "large" / "labels").iterdir()) == sorted(outcomes)


def test_rescore_refuses_in_one_line_what_it_cannot_rescore(scored, tiny_models, tiny_heads, tmp_path, capsys):
    plain = tmp_path / "plain"
    shutil.copytree(scored, plain)
    options = json.loads((plain / "_label_options.json").read_text())
    (plain / "_label_options.json").write_text(json.dumps({**options, "embedding": False}))
    listed = tmp_path / "listed"
    shutil.copytree(scored, listed)
    (listed / "_label_options.json").write_text(json.dumps([options]))  # JSON, but not a record
    other = export_model(
        ExportConfig(out=tmp_path / "other", synthetic="tiny", head_size="small", seed=8, heads_only=True)
    )
    capsys.readouterr()
    cases = {
        "holds no embeddings": (plain, tiny_heads["small"]),
        "_label_options.json cannot be read": (listed, tiny_heads["small"]),
        "holds embeddings of tower": (scored, other.directory),
        "has the tower (images in)": (scored, tiny_models["small"]),
        "is not an emonet-batch output": (scored.parent / "moved", tiny_heads["small"]),
        "--output is the source": (scored, tiny_heads["small"], scored),
    }
    for message, (source, model, *output) in cases.items():
        args = ["rescore", str(source), "--model", str(model), "--output", str((output or [tmp_path / "x"])[0])]
        assert main([*args, "--progress", "off", "--no-stats"]) == 2, message
        err = capsys.readouterr().err.strip()
        assert err.startswith("emonet-batch: error: ") and message in err and "\n" not in err, err
    with pytest.raises(UsageError, match="heads-only"):
        score(tmp_path, tiny_heads["small"], [scored / "labels"])
    assert not (tmp_path / "x").exists()


def test_losing_an_inference_actor_mid_rescore_loses_no_rows_and_commits_each_shard_once(tiny_heads, tmp_path):
    """A rescore's actor reads and stages whole shards itself (its read is fused into it): killed mid-run, its shards
    are read, scored and staged again by the actor Ray restarts, and each is committed once with every row."""
    import threading

    from emonet_batch.devtools.benchmark import embedding_output

    source = embedding_output(tmp_path / "source", load_model_info(tiny_heads["small"]), count=2400, per_shard=8)
    config = rescore_config(str(source), str(tmp_path / "out"), str(tiny_heads["small"]), **FAST)
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(result=run_score(config)))
    thread.start()
    wait_for_commits(tmp_path / "out", 1)
    killed = kill_processes("InferStage")
    committed_before = len(list((tmp_path / "out" / "_commits").iterdir()))
    thread.join(timeout=300)
    result, labels = outcome["result"], pq.read_table(tmp_path / "out" / "labels")
    assert killed >= 1 and committed_before < 300  # the actors were killed mid-run
    assert result.exit_code == 0 and {o.status for o in result.outcomes.values()} == {"complete"}
    assert labels.num_rows == 2400 and len(set(labels.column("key").to_pylist())) == 2400
    assert verify_output(*_local(tmp_path / "out")) == {}


def _local(path):
    from emonet_batch.job.config import StorageOptions
    from emonet_batch.job.storage import filesystem

    return filesystem(str(path), StorageOptions())

import subprocess
import sys

import pytest

from emonet_batch.cli import main
from emonet_batch.devtools.samples import demo_samples, sample_images


@pytest.mark.ray
@pytest.mark.torch
def test_demo_runs_the_whole_job(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--progress", "off"]) == 0
    text, err = capsys.readouterr()
    assert "%|" not in err, err  # no third-party progress bar while the demo model is made and loaded
    assert "complete  4      96       96      0" in text
    assert "top emotion" in text and str(tmp_path / "out" / "labels") in text
    assert len(list((tmp_path / "out" / "_commits").iterdir())) == 4
    report = (tmp_path / "out" / "stats" / "report.html").read_text(encoding="utf-8")
    assert "a synthetic model with random weights" in report and "synthetic:tiny/large" in report
    # a second demo reuses shards and model and skips the committed shards
    before = (tmp_path / "model" / "model.json").stat().st_mtime_ns
    assert main(["demo", "--out", str(tmp_path), "--progress", "off"]) == 0
    assert "skipped (committed earlier)  4" in capsys.readouterr().out
    assert (tmp_path / "model" / "model.json").stat().st_mtime_ns == before


def test_samples_are_deterministic_and_varied():
    first, second = sample_images(6), sample_images(6)
    assert first == second
    assert {data[:2] for _, data in first} == {b"\xff\xd8", b"\x89P"}  # JPEG and PNG
    keys = [key for key, _ in demo_samples(5, size=64)]
    assert keys == [f"face-{i:05d}" for i in range(5)]


def test_scoring_path_does_not_import_torch():
    """At run time too (a third-party import could pull torch in): the whole scoring side, loaded."""
    modules = ["cli", "run.score", "edge.plan", "job.infer", "job.decode", "analysis.report", "devtools.demo"]
    code = (
        f"import sys; import {', '.join('emonet_batch.' + m for m in modules)}; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

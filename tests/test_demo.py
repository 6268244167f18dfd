import subprocess
import sys

from emonet_batch.demo import run_demo
from emonet_batch.samples import sample_images


def test_demo_scores_sample_images(tmp_path):
    text = run_demo(tmp_path, 5)
    assert "scored 5 sample images" in text
    assert len(list((tmp_path / "samples").iterdir())) == 5
    assert text.count("face-0") == 5
    # the second run reuses the verified model instead of exporting again
    before = (tmp_path / "model" / "model.json").stat().st_mtime_ns
    run_demo(tmp_path, 2)
    assert (tmp_path / "model" / "model.json").stat().st_mtime_ns == before


def test_sample_images_are_deterministic_and_varied():
    first, second = sample_images(6), sample_images(6)
    assert first == second
    assert {data[:2] for _, data in first} == {b"\xff\xd8", b"\x89P"}  # JPEG and PNG


def test_scoring_path_does_not_import_torch():
    code = (
        "import sys; import emonet_batch.cli, emonet_batch.infer, emonet_batch.preprocess, emonet_batch.postprocess, "
        "emonet_batch.model, emonet_batch.demo, emonet_batch.hub; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

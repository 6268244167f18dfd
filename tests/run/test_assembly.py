"""Whole shards assembled on the cluster (edge/assemble.py): a shard's pieces stay until the driver has its
assembly's result, so that a task Ray runs again after losing its node finds them; then a later task removes them."""

from emonet_batch.job.config import LabelOptions, StorageOptions
from emonet_batch.job.rows import COMPLETE
from emonet_batch.job.storage import filesystem

from ..rowkit import ATTEMPT, shards, whole_shard_pieces


def test_a_shards_pieces_go_only_after_the_driver_has_its_assembly(ray_runtime, model, tmp_path):
    from emonet_batch.edge.assemble import AssemblyContext, ShardAssembly

    fs, output = filesystem(str(tmp_path), StorageOptions())
    assembly = ShardAssembly(AssemblyContext(output, StorageOptions(), model, LabelOptions(), ATTEMPT))
    first, second = shards("a", "b")
    first_pieces, end = whole_shard_pieces(fs, output, model, "a")
    assembly.submit(first, first_pieces, end)
    ((shard, staged),) = assembly.finished(wait=True)
    assert shard == first and staged.outcome.status == COMPLETE
    assert all((tmp_path / piece.path).exists() for piece in first_pieces)

    second_pieces, end = whole_shard_pieces(fs, output, model, "b")
    assembly.submit(second, second_pieces, end)
    ((shard, staged),) = assembly.finished(wait=True)
    assert shard == second and staged.outcome.status == COMPLETE
    assert not any((tmp_path / piece.path).exists() for piece in first_pieces)
    assert all((tmp_path / piece.path).exists() for piece in second_pieces)

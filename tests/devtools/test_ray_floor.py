from emonet_batch.devtools.ray_floor import heads_floor_rate


def test_the_heads_floor_scores_every_block_in_the_fused_actor_pool(tiny_heads, ray_runtime):
    # 50 rows in tasks of 20 (shards) and blocks of 8: short blocks and a short last task; a row left unscored is an
    # error
    assert heads_floor_rate(str(tiny_heads["small"]), rows=50, task_rows=20, block_rows=8) > 0

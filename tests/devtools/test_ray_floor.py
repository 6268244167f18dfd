from emonet_batch.devtools.ray_floor import heads_floor_rate


def test_the_heads_floor_scores_every_block_in_the_fused_actor_pool(tiny_heads, ray_runtime):
    # 50 rows in blocks of 16: the last block is short; a row left unscored is an error
    assert heads_floor_rate(str(tiny_heads["small"]), rows=50, block_rows=16) > 0

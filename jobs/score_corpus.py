"""Ray job entrypoint: one scoring run, with exactly the options of `emonet-batch score`.

    ray job submit --working-dir . -- python jobs/score_corpus.py 's3://corpus/shard-{00000..00399}.tar' \\
        --output s3://results/run1 --model /models/large --gpus-per-worker 1
"""

import sys

from emonet_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))

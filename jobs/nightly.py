"""Ray job entrypoint: nightly incremental scoring from a YAML config (see jobs/nightly.example.yaml).

ray job submit --working-dir . -- python jobs/nightly.py jobs/nightly.example.yaml [--date YYYY-MM-DD]
"""

import sys

from emonet_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["nightly", *sys.argv[1:]]))

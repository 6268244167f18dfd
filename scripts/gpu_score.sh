#!/usr/bin/env bash
# The job itself on a GPU, as a user runs it: generated faces packed by `emonet-batch shard`, scored by
# `emonet-batch score` on one GPU actor (ONNX Runtime CUDA) with each export scripts/gpu_bench.py made, fp32 and
# fp16, then checked by `emonet-batch verify`. Writes one JSON object: per model, the exit codes and the run's
# figures from its manifest. Run by scripts/gpu_check.sh; GPU_CHECK_DRY_RUN=1: a tiny export on the CPU.
#
#   scripts/gpu_score.sh OUT_JSON [IMAGES]      (default IMAGES: 8192, in shards of 512)
set -uo pipefail
cd "$(dirname "$0")/.."
out=$1
images=${2:-8192}
batch=128
models=benchmarks/models
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 scripts/sample_faces.py "$work/faces" 256 >/dev/null || exit 1
# copies under other names make up the count: generating every image would cost more than the run measured
copies=$(((images + 255) / 256 - 1))
for face in "$work"/faces/*; do
    for i in $(seq 1 "$copies"); do cp "$face" "${face%.*}-$i.${face##*.}"; done
done
python3 -m emonet_batch shard "$work/faces" --out "$work/shards" --shard-size 512 >/dev/null || exit 1
if [ "${GPU_CHECK_DRY_RUN:-0}" = 1 ]; then
    python3 -m emonet_batch export --synthetic tiny --out "$work/tiny" >/dev/null || exit 1
    runs=("tiny-cpu:$work/tiny")
    device=()
else
    runs=("full-large-fp32:$models/full-large-fp32" "full-large-fp16:$models/full-large-fp16")
    device=(--gpus-per-worker 1 --execution-provider cuda)
fi
for entry in "${runs[@]}"; do
    name=${entry%%:*} model=${entry#*:}
    [ -f "$model/model.json" ] || { echo "gpu_score: no export at $model (gpu_bench.py makes it)"; continue; }
    python3 -m emonet_batch score "$work/shards" --output "$work/labels-$name" --model "$model" "${device[@]}" \
        --batch-size "$batch" --progress log --no-report
    echo "$?" > "$work/labels-$name.score-exit"
    python3 -m emonet_batch verify "$work/labels-$name"
    echo "$?" > "$work/labels-$name.verify-exit"
done
python3 - "$work" "$out" "$images" "$batch" <<'EOF'
import json, sys
from pathlib import Path

work, out, images, batch = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
result = {"images": images, "batch_size": batch, "runs": {}}
for exit_file in sorted(work.glob("labels-*.score-exit")):
    labels = exit_file.with_suffix("")
    manifest = labels / "manifest.json"
    figures = json.loads(manifest.read_text())["figures"] if manifest.is_file() else None
    result["runs"][labels.name.removeprefix("labels-")] = {
        "score_exit": int(exit_file.read_text()),
        "verify_exit": int(labels.with_suffix(".verify-exit").read_text()),
        "figures": figures,
    }
text = json.dumps(result, indent=2)
print(text)
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(text + "\n")
EOF

#!/usr/bin/env bash
# One prepared command for a machine with an NVIDIA GPU, PyTorch (CUDA) and transformers but no package
# registry, sized for ~8 minutes of its time:
#   0. with ORT_GPU_PARTS (a folder of scripts/gpu_ort_parts.sh's parts): onnxruntime-gpu joined from them and
#      installed in place of the machine's CPU onnxruntime; then `emonet-batch doctor --execution-provider cuda`:
#      the GPUs, the driver, the ONNX Runtime build and which of its GPU libraries load, as the job sees them
#      (printed; a failing row does not stop the check);
#   1. installs the carried wheels (scripts/gpu_wheels.sh: a stripped Ray and the job's small packages, one
#      transfer of ~44 MB) into a directory of their own, when WHEEL_DIR holds any;
#   2. scripts/gpu_bench.py: PyTorch eager fp32 on the GPU (the reference), PyTorch bf16/fp16 replayed from a
#      CUDA graph, the ONNX Runtime GPU paths when its build has them, decode on one core and on every core;
#   2b. scripts/gpu_sync.py on the fp16 export, when gpu_bench.py made it: ONNX Runtime CUDA's images/s and host
#      CPU per image with CUDA's default wait (a spin) against blocking synchronisation, in turns;
#   3. when Ray imports and gpu_bench.py made its exports (ONNX Runtime has a GPU provider), the job itself on
#      the GPU: `emonet-batch score` of generated faces on one GPU actor with each export, then `verify`
#      (scripts/gpu_score.sh);
#   4. when Ray imports, scripts/bench.py --model null on this host's cores: the job's own pipeline ceiling,
#      what the CPUs of a GPU node can feed (GPU_CHECK_NULL_IMAGES=0 leaves it out).
# Results: benchmarks/results/<date>-gpu-<gpu name>-bench.json, -sync.json, -score.json and -host-null.json, also
# copied to $OUT when set.
# GPU_CHECK_DRY_RUN=1 runs every step on the CPU with the tiny model (minutes, no GPU needed).
#
#   [ORT_GPU_PARTS=DIR] scripts/gpu_check.sh [WHEEL_DIR] [gpu_bench.py options...]      (default WHEEL_DIR: wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=${1:-wheels}
shift || true
site=${GPU_CHECK_SITE:-/tmp/emonet-gpu-site}
if compgen -G "$wheels/*.whl" >/dev/null; then
    # --target: the carried packages shadow nothing the image holds except by name, and leave it untouched
    python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$wheels"/*.whl
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if [ -n "${ORT_GPU_PARTS:-}" ]; then
    # onnxruntime-gpu in parts (scripts/gpu_ort_parts.sh): joined, checked, then in place of the CPU build
    wheel_name=$(awk '{print $2}' "$ORT_GPU_PARTS/SHA256SUMS")
    cat "$ORT_GPU_PARTS/$wheel_name".part-* > "/tmp/$wheel_name"
    (cd /tmp && sha256sum --check --quiet "$ORT_GPU_PARTS/SHA256SUMS")
    if [ "${GPU_CHECK_DRY_RUN:-0}" = 1 ]; then
        echo "gpu_check: /tmp/$wheel_name joined and checked (dry run: not installed)"
    else
        python3 -m pip uninstall --quiet --yes onnxruntime || true
        python3 -m pip install --quiet --no-index --no-deps --no-cache-dir "/tmp/$wheel_name"
    fi
fi
python3 -m emonet_batch doctor --execution-provider cuda || true
if [ "${GPU_CHECK_DRY_RUN:-0}" = 1 ]; then
    bench=(--device cpu --synthetic tiny --images 64 --batch-size 16)
    null_images=${GPU_CHECK_NULL_IMAGES:-512}
    gpu="cpu dry run"
else
    bench=()
    null_images=${GPU_CHECK_NULL_IMAGES:-8192}
    gpus=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo unknown)
    echo "$gpus"
    gpu=${gpus%%,*}
fi
# the results are named after the GPU (as gpu_bench.py names its own), so that each kind's figures stay apart
slug=$(python3 -c 'import sys; sys.path.insert(0, "scripts"); from gpu_bench import device_slug; print(device_slug(sys.argv[1]))' "$gpu")
prefix=benchmarks/results/$(date +%Y-%m-%d)-gpu-$slug
written=("$prefix-bench.json")
timeout "${GPU_CHECK_TIMEOUT:-330}" python3 scripts/gpu_bench.py --out "${written[0]}" "${bench[@]}" "$@"
fp16_export=benchmarks/models/full-large-fp16
if [ "${GPU_CHECK_DRY_RUN:-0}" != 1 ] && [ -f "$fp16_export/model.json" ]; then
    written+=("$prefix-sync.json")
    timeout "${GPU_CHECK_SYNC_TIMEOUT:-120}" python3 scripts/gpu_sync.py "$fp16_export" --out "${written[-1]}" || true
fi
if python3 -c "import ray" 2>/dev/null; then
    written+=("$prefix-score.json")
    timeout "${GPU_CHECK_SCORE_TIMEOUT:-240}" scripts/gpu_score.sh "${written[-1]}" || true
    if [ "$null_images" -gt 0 ]; then
        written+=("$prefix-host-null.json")
        timeout "${GPU_CHECK_NULL_TIMEOUT:-150}" python3 scripts/bench.py --model null --images "$null_images" \
            --out "${written[-1]}"
    fi
else
    echo "gpu_check: Ray does not import here; the job on the GPU and the pipeline ceiling were not measured (carry scripts/gpu_wheels.sh's set)"
fi
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    for file in "${written[@]}"; do [ ! -f "$file" ] || cp "$file" "$OUT"/; done
fi

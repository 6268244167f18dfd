#!/usr/bin/env bash
# One prepared command for a machine with an NVIDIA GPU: installs the GPU build of ONNX Runtime from local
# wheels (scripts/gpu_wheels.sh), then runs scripts/gpu_bench.py: export of the full synthetic Large model
# at fp32 and fp16, and the throughput and accuracy of every GPU path (ORT CUDA fp32/fp16, TensorRT fp16
# when it loads) against PyTorch eager fp32 on the same GPU. Writes benchmarks/results/<date>-<device>.json.
# Needs PyTorch with CUDA and transformers on the machine. Whole run: ~5 minutes, under 8 with a TensorRT
# engine build (GPU_CHECK_TIMEOUT, default 470 s, bounds it).
#
#   scripts/gpu_check.sh [WHEEL_DIR] [gpu_bench.py options...]      (default WHEEL_DIR: wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=${1:-wheels}
shift || true
site=${GPU_CHECK_SITE:-/tmp/emonet-gpu-site}
for first in "$wheels"/*.whl.part-aa; do
    [ -e "$first" ] || continue
    whole=${first%.part-aa}
    cat "$whole".part-* > "$whole"
done
# --target: the GPU build shadows a CPU onnxruntime already installed, without touching it
python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
timeout "${GPU_CHECK_TIMEOUT:-470}" python3 scripts/gpu_bench.py "$@"

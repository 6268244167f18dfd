#!/usr/bin/env bash
# Where PyPI is reachable: the onnxruntime-gpu wheel of requirements/constraints.txt for the GPU machine's Python, cut
# into parts small enough for one transfer each (56 MiB), with the whole wheel's sha256 in SHA256SUMS. Copy every
# part and SHA256SUMS into one folder there, then run `ORT_GPU_PARTS=that-folder scripts/gpu_check.sh`: it joins
# the parts, checks the sum, and puts the GPU build in place of the machine's CPU one (both at once are refused).
#
#   scripts/gpu_ort_parts.sh [PARTS_DIR] [PYTHON_VERSION]      (defaults: ort-gpu-parts, 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-ort-gpu-parts}
python_version=${2:-3.12}
pin=$(grep -i "^onnxruntime-gpu==" requirements/constraints.txt)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do platforms+=(--platform "$p"); done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" --implementation cp \
    "${platforms[@]}" -d "$work" "$pin"
wheel=$(cd "$work" && ls onnxruntime_gpu-*.whl)
mkdir -p "$dir"
rm -f "$dir"/*.part-* "$dir"/SHA256SUMS
(cd "$work" && sha256sum "$wheel") > "$dir/SHA256SUMS"
split -b 56M "$work/$wheel" "$dir/$wheel.part-"
ls -l "$dir"

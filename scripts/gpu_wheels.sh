#!/usr/bin/env bash
# Fetch, on a machine with PyPI access, the wheels scripts/gpu_check.sh installs on a GPU machine that has
# PyTorch (CUDA), transformers, numpy, pyarrow and fsspec but no registry access: the GPU build of ONNX
# Runtime and the two small packages the scoring code imports beyond those. The ~255 MB onnxruntime-gpu
# wheel is also split into parts of 48 MiB (`<wheel>.part-aa`, `-ab`, ...) for transfers with a size
# limit; gpu_check.sh joins them.
#
#   scripts/gpu_wheels.sh [WHEEL_DIR] [PYTHON_VERSION]      (defaults: wheels, 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-wheels}
python_version=${2:-3.12}
mkdir -p "$dir"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do platforms+=(--platform "$p"); done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" --implementation cp \
    "${platforms[@]}" -d "$dir" onnxruntime-gpu==1.31.1 simplejpeg==1.9.0 braceexpand==0.1.7
for wheel in "$dir"/onnxruntime_gpu-*.whl; do
    split --bytes=48M "$wheel" "$wheel.part-"
    rm "$wheel"
done
ls -l "$dir"

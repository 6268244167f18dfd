#!/usr/bin/env bash
# Fetch, where PyPI is reachable, the wheels scripts/gpu_check.sh installs on a GPU machine with no registry
# whose image already has PyTorch (CUDA), transformers, numpy, pillow, pyarrow, pandas, fsspec, click, rich,
# psutil and a CPU onnxruntime: Ray, stripped of what a scoring job never loads (its Java jars, the dashboard's
# web client, RLlib, Serve, the LLM library: 79 MB -> 42 MB) and repacked by `wheel` (which rewrites its
# RECORD), and the small packages the job imports beyond the image. Versions are those of
# requirements/constraints.txt. The set is ~44 MB: one transfer of at most 60 MiB, checked below.
#
#   scripts/gpu_wheels.sh [WHEEL_DIR] [PYTHON_VERSION]      (defaults: wheels, 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-wheels}
python_version=${2:-3.12}
pins() { for name in "$@"; do grep -i "^$name==" requirements/constraints.txt; done; }
mkdir -p "$dir"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do platforms+=(--platform "$p"); done
# shellcheck disable=SC2046
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" --implementation cp \
    "${platforms[@]}" -d "$dir" $(pins ray simplejpeg braceexpand webdataset jsonschema jsonschema-specifications \
    referencing rpds-py)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet wheel==0.48.0
for ray_wheel in "$dir"/ray-*.whl; do
    "$work/venv/bin/python" -m wheel unpack -d "$work/unpacked" "$ray_wheel"
    tree=$(echo "$work"/unpacked/ray-*)
    rm -rf "$tree"/ray/{jars,dashboard/client,rllib,serve,llm}
    rm "$ray_wheel"
    "$work/venv/bin/python" -m wheel pack -d "$dir" "$tree"
done
ls -l "$dir"
size=$(du -cb "$dir"/*.whl | tail -1 | cut -f1)
echo "wheels: $((size / 1048576)) MiB"
[ "$size" -le $((60 * 1048576)) ] || { echo "gpu_wheels: over 60 MiB, too much for one transfer" >&2; exit 1; }

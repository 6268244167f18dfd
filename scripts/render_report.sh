#!/usr/bin/env bash
# Render a report.html to a PNG in headless Chromium, to look at it as a person would.
#   scripts/render_report.sh emonet-demo/out/stats/report.html [out.png] [width]
# Needs Debian's chromium (apt-get install chromium). The flags keep Chromium off the network.
set -euo pipefail
report=${1:?usage: render_report.sh REPORT_HTML [OUT_PNG] [WIDTH]}
png=${2:-${report%.html}.png}
width=${3:-1280}
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "render_report.sh: chromium not found; install it with: apt-get install chromium" >&2
  exit 2
fi
# a window taller than any report, then the screenshot is cut just below the page's last content
height=${HEIGHT:-40000}
python=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$profile" \
  --window-size="${width},${height}" --screenshot="$(realpath -m "$png")" "file://$(realpath "$report")" >/dev/null 2>&1
"$python" - "$png" <<'PY'
import sys

import numpy as np
from PIL import Image

path = sys.argv[1]
image = Image.open(path).convert("RGB")
rows = np.flatnonzero((np.asarray(image) < 250).any(axis=(1, 2)))
bottom = min(image.height, int(rows[-1]) + 40) if rows.size else image.height
image.crop((0, 0, image.width, bottom)).save(path)
print(f"{path} ({image.width}x{bottom} px)")
PY

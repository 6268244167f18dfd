"""Write generated face images into a folder, as a stand-in for your own (README, "Your own images").

python scripts/sample_faces.py DIR [COUNT]
"""

import sys
from pathlib import Path

from emonet_batch.devtools.samples import sample_images


def main() -> None:
    folder, count = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 40
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in sample_images(count):
        suffix = ".png" if data.startswith(b"\x89PNG") else ".jpg"
        (folder / f"{name}{suffix}").write_bytes(data)
    print(f"wrote {count} images to {folder}")


if __name__ == "__main__":
    main()

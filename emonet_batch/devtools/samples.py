"""Generated sample face images for the demo and tests: cartoon faces with different expressions,
sizes and image modes, encoded as real JPEG/PNG bytes (no data can be downloaded here)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

_SKIN = [(241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172)]
_MOODS = ("smile", "frown", "surprise", "neutral")


def face_image(index: int, size: int = 256) -> Image.Image:
    """A deterministic cartoon face; `index` picks skin tone, mood and background."""
    rng = np.random.default_rng(index)
    background = tuple(int(v) for v in rng.integers(60, 230, size=3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    s = size / 256
    draw.ellipse(
        [48 * s, 28 * s, 208 * s, 228 * s],
        fill=_SKIN[index % len(_SKIN)],
        outline=(60, 40, 30),
        width=max(1, int(3 * s)),
    )
    for x in (100, 156):
        draw.ellipse([(x - 12) * s, 96 * s, (x + 12) * s, 120 * s], fill="white", outline="black")
        draw.ellipse([(x - 5) * s, 103 * s, (x + 5) * s, 113 * s], fill=(40, 30, 20))
    mood = _MOODS[index % len(_MOODS)]
    if mood == "smile":
        draw.arc([88 * s, 140 * s, 168 * s, 190 * s], 20, 160, fill=(120, 30, 30), width=max(1, int(5 * s)))
    elif mood == "frown":
        draw.arc([88 * s, 165 * s, 168 * s, 215 * s], 200, 340, fill=(120, 30, 30), width=max(1, int(5 * s)))
    elif mood == "surprise":
        draw.ellipse([113 * s, 155 * s, 143 * s, 195 * s], fill=(90, 20, 20))
    else:
        draw.line([98 * s, 175 * s, 158 * s, 175 * s], fill=(120, 30, 30), width=max(1, int(5 * s)))
    noise = rng.normal(0, 6, size=(size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def sample_images(count: int) -> list[tuple[str, bytes]]:
    """(name, encoded bytes) pairs: mostly JPEG faces of varied sizes, with a greyscale JPEG and an
    RGBA PNG mixed in so the demo shows the odd-mode paths too."""
    samples = []
    for i in range(count):
        image = face_image(i, size=(192, 256, 320, 480)[i % 4])
        if i % 5 == 3:
            samples.append((f"face-{i:03d}", encode(image.convert("L"), "JPEG", quality=90)))
        elif i % 5 == 4:
            rgba = image.convert("RGBA")
            rgba.putalpha(Image.new("L", image.size, 255))
            samples.append((f"face-{i:03d}", encode(rgba, "PNG")))
        else:
            samples.append((f"face-{i:03d}", encode(image, "JPEG", quality=90)))
    return samples


_GENDERS = ("female", "male")
_ETHNICITIES = ("african", "east_asian", "european", "latin_american", "middle_eastern", "south_asian")


def demo_metadata(index: int) -> dict:
    """EmoNet-style metadata for a generated face (deterministic)."""
    rng = np.random.default_rng(10_000 + index)
    return {
        "gender": _GENDERS[int(rng.integers(len(_GENDERS)))],
        "age": int(rng.integers(18, 80)),
        "ethnicity": _ETHNICITIES[int(rng.integers(len(_ETHNICITIES)))],
        "mood_drawn": _MOODS[index % len(_MOODS)],
    }


def demo_samples(count: int, size: int = 384) -> list[tuple[str, dict[str, bytes]]]:
    """WebDataset samples (key, {"jpg": ..., "json": ...}) of generated faces with metadata."""
    import json

    return [
        (
            f"face-{i:05d}",
            {
                "jpg": encode(face_image(i, size=size), "JPEG", quality=90),
                "json": json.dumps(demo_metadata(i)).encode(),
            },
        )
        for i in range(count)
    ]

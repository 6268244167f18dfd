"""Decode stage: image bytes -> RGB uint8 [S, S, 3] at the model's size (numpy/PIL, no torch); a sample
that cannot be decoded becomes an error row.

The ONNX graph takes these uint8 pixels and applies x/255 then (x-0.5)/0.5 itself, so the only
preprocessing outside the graph is decoding, mode conversion and the resize. The resize is PIL's, with
the filter recorded in the model, which is what the transformers SigLIP image processor does; the tests
hold the two within one grey level.

Mode choices:
- EXIF orientation is applied first (phone photos are stored rotated).
- Transparency (RGBA, LA, PA, palette with a transparent colour) is composited over white, as the
  transformers processor does, so a transparent background reads as white paper, not as black.
- 16-bit and 32-bit integer greys are scaled from 0..65535 to 0..255 (PIL's own conversion clips them,
  turning most 16-bit images white); float greys ('F') are taken on the 0..255 scale and clipped.
- CMYK, YCbCr, bilevel and palette images go through PIL's RGB conversion.
"""

from __future__ import annotations

import io
import time
import warnings
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import DEFAULT_MAX_PIXELS
from .rows import DECODE_CPU, ERROR, PIXELS, SAMPLE, StageColumns, cpu_share

#: Resize filters by the names recorded in model.json, and the PIL codes of preprocessor_config.json.
RESIZE_FILTERS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


ORIENTATION_TAG = 0x0112  # EXIF orientation
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_WIDE_GREY_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


class ImageDecodeError(ValueError):
    """A sample's image could not be turned into pixels. `kind` is a short machine-readable reason:
    empty, not_an_image, too_many_pixels, corrupt, unsupported_mode."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def resize_filter_name(pil_code: int | str) -> str:
    """Name of the resize filter for a `resample` value of preprocessor_config.json."""
    for name, code in RESIZE_FILTERS.items():
        if pil_code == name or pil_code == int(code):
            return name
    raise ValueError(f"unknown resize filter {pil_code!r}; known: {', '.join(RESIZE_FILTERS)}")


def decode_image(
    data: bytes,
    size: int,
    resize_filter: str = "bilinear",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    fast: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode image bytes to RGB uint8 [size, size, 3]; raises ImageDecodeError for bad input.

    fast: colour JPEGs are decoded by libjpeg-turbo (simplejpeg) scaled in the DCT domain to the smallest
    of its n/8 factors that stays at or above `size`, then resized. simplejpeg because PIL's `draft` only
    offers 1/2, 1/4 and 1/8: a 1024 px face for a 384 px model decodes at 3/8, exactly 384, instead of 1/2.
    ~3.5x faster than decoding at full size on 1024 px faces, within ~1.1 grey levels mean of the exact
    path (the benchmark measures both). Other images take the exact path.

    out: a uint8 [size, size, 3] array the result is written to and returned (a JPEG that decodes straight at
    the model size is decoded into it, without an array of its own and a copy)."""
    image = open_image(data, max_pixels)
    try:
        if fast and image.format == "JPEG" and image.mode == "RGB":
            orientation = image.getexif().get(ORIENTATION_TAG, 1)
            if out is not None and orientation == 1 and _scaled_size(data, size) == (size, size):
                return simplejpeg.decode_jpeg(data, "RGB", min_height=size, min_width=size, buffer=out)
            pixels = simplejpeg.decode_jpeg(data, "RGB", min_height=size, min_width=size)
            if out is None and orientation == 1 and pixels.shape[:2] == (size, size):
                return pixels  # decoded straight at the model size (a 1024 px face at 3/8): nothing left to do
            image = with_orientation(Image.fromarray(pixels, mode="RGB"), orientation)
        image = ImageOps.exif_transpose(image)
        rgb = to_rgb(image)
        resized = np.asarray(rgb.resize((size, size), resample=RESIZE_FILTERS[resize_filter]), dtype=np.uint8)
        if out is None:
            return resized
        out[...] = resized
        return out
    except ImageDecodeError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # PIL and simplejpeg report truncated/corrupt data as these
        raise ImageDecodeError("corrupt", f"cannot decode image: {exc}") from None


def _scaled_size(data: bytes, size: int) -> tuple[int, int]:
    """The height and width libjpeg-turbo decodes `data` to at its smallest scale of at least `size`."""
    height, width, _, _ = simplejpeg.decode_jpeg_header(data, min_height=size, min_width=size)
    return height, width


def with_orientation(image: Image.Image, orientation: int) -> Image.Image:
    """Carry an EXIF orientation over to an image decoded without its EXIF, for `exif_transpose`."""
    if orientation != 1:
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = orientation
        image.info["exif"] = exif.tobytes()
    return image


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open image bytes lazily and check the pixel count before anything is decoded."""
    if not data:
        raise ImageDecodeError("empty", "image is empty (0 bytes)")
    with warnings.catch_warnings():
        # our own limit below is the one that counts; PIL's warning would only be noise in the logs
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageDecodeError("not_an_image", "not a recognised image format") from None
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError("too_many_pixels", str(exc)) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageDecodeError("corrupt", f"cannot read image header: {exc}") from None
    pixels = image.width * image.height
    if pixels > max_pixels:
        raise ImageDecodeError(
            "too_many_pixels",
            f"image has {image.width}x{image.height} = {pixels} pixels, over the limit of {max_pixels}",
        )
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (see the module docstring for the choices)."""
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_GREY_MODES:
        grey = np.asarray(image).astype(np.float64)
        scaled = np.clip(grey, 0, 65535) / 257.0
        return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L").convert("RGB")
    if image.mode == "F":
        grey = np.clip(np.asarray(image, dtype=np.float64), 0, 255)
        return Image.fromarray(np.rint(grey).astype(np.uint8), mode="L").convert("RGB")
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise ImageDecodeError("unsupported_mode", f"cannot convert image mode {image.mode} to RGB: {exc}") from None


#: decode_batch's columns.
DECODE_COLUMNS = StageColumns(
    takes=("kind", "image", "stage", "error_type", "message"), gives=(PIXELS, DECODE_CPU), drops=("image",)
)


def decode_batch(
    batch: dict[str, np.ndarray], size: int, resize_filter: str, max_pixels: int, fast: bool
) -> dict[str, Any]:
    """The decode stage over a batch of rows (DECODE_COLUMNS): adds `pixels`, drops `image`."""
    started = time.thread_time()
    count = len(batch["kind"])
    pixels = np.zeros((count, size, size, 3), dtype=np.uint8)
    kind = batch["kind"].astype(object)
    stage, error_type, message = (batch[c].astype(object) for c in ("stage", "error_type", "message"))
    for i in np.flatnonzero(kind == SAMPLE):
        try:
            decode_image(batch["image"][i], size, resize_filter, max_pixels, fast, out=pixels[i])
        except ImageDecodeError as exc:
            pixels[i] = 0  # a decode that failed half-way may have written part of an image
            kind[i], stage[i], error_type[i], message[i] = ERROR, "decode", exc.kind, str(exc)
    out = {name: column for name, column in batch.items() if name != "image"}
    out.update(kind=kind, stage=stage, error_type=error_type, message=message)
    out[PIXELS] = pixels
    out[DECODE_CPU] = cpu_share(time.thread_time() - started, count)
    return out

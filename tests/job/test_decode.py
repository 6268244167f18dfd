import io

import numpy as np
import pytest
from PIL import Image

from emonet_batch.devtools.samples import encode, face_image
from emonet_batch.job.decode import ImageDecodeError, decode_image, resize_filter_name

SIZE = 64


def decoded(image: Image.Image, fmt: str = "PNG", **options) -> np.ndarray:
    out = decode_image(encode(image, fmt, **options), SIZE)
    assert out.dtype == np.uint8 and out.shape == (SIZE, SIZE, 3)
    return out


@pytest.mark.torch  # transformers comes with the export extra, with torch
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("resample,name", [(2, "bilinear"), (3, "bicubic")])
def test_matches_the_transformers_siglip_processor(fmt, resample, name):
    from transformers.models.siglip import SiglipImageProcessorPil

    processor = SiglipImageProcessorPil(size={"height": 384, "width": 384}, resample=resample)
    for index, size in [(0, 512), (1, 300), (2, 1024)]:
        data = encode(face_image(index, size=size), fmt, **({"quality": 92} if fmt == "JPEG" else {}))
        ours = decode_image(data, 384, resize_filter_name(resample)).astype(np.int32)
        theirs = processor(images=Image.open(io.BytesIO(data)), return_tensors="np")["pixel_values"][0]
        theirs = np.rint((theirs.transpose(1, 2, 0) * 0.5 + 0.5) * 255).astype(np.int32)
        assert np.mean(np.abs(ours - theirs) <= 1) >= 0.99, name


@pytest.mark.parametrize("fast", [False, True])
def test_exif_orientation_is_applied(fast):
    # stored landscape: left half red, right half blue; orientation 6 means "rotate 90 degrees clockwise to view"
    array = np.zeros((40, 80, 3), dtype=np.uint8)
    array[:, :40] = (255, 0, 0)
    array[:, 40:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode_image(encode(Image.fromarray(array), "JPEG", quality=95, exif=exif.tobytes()), SIZE, fast=fast).astype(
        int
    )
    top, bottom = out[: SIZE // 2 - 4].mean(axis=(0, 1)), out[SIZE // 2 + 4 :].mean(axis=(0, 1))
    assert top[0] > 200 and top[2] < 60, "red should be on top after rotating clockwise"
    assert bottom[2] > 200 and bottom[0] < 60


def test_grey_and_bilevel_become_equal_channels():
    grey = Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (SIZE, 1)))
    out = decoded(grey)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    np.testing.assert_array_equal(out[..., 0], np.asarray(grey))
    bilevel = grey.convert("1")
    assert set(np.unique(decoded(bilevel))) <= {0, 255}


def test_palette_images():
    rgb = face_image(3, size=SIZE)
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    np.testing.assert_array_equal(decoded(palette), np.asarray(palette.convert("RGB")))


def test_palette_transparency_is_white():
    palette = Image.new("P", (SIZE, SIZE), 0)
    palette.putpalette([10, 20, 30] + [200, 0, 0] * 255)
    palette.paste(1, (0, 0, SIZE // 2, SIZE))
    palette.info["transparency"] = 0  # index 0 (the right half) is transparent
    out = decoded(palette)
    assert (out[:, -8:] == 255).all()
    assert (out[:, :8] == (200, 0, 0)).all()


def test_alpha_is_composited_over_white():
    rgba = np.zeros((SIZE, SIZE, 4), dtype=np.uint8)
    rgba[..., :3] = (0, 0, 200)
    rgba[:, : SIZE // 4, 3] = 255  # opaque blue
    rgba[:, SIZE // 4 : SIZE // 2, 3] = 128  # half transparent
    # the right half stays fully transparent
    out = decoded(Image.fromarray(rgba, "RGBA")).astype(int)
    np.testing.assert_array_equal(out[:, 2], [0, 0, 200] * np.ones((SIZE, 1), int))
    assert abs(out[5, 3 * SIZE // 8, 0] - 127) <= 2 and abs(out[5, 3 * SIZE // 8, 2] - 227) <= 2
    assert (out[:, -4:] == 255).all()
    la = Image.fromarray(rgba[..., [0, 3]], "LA")
    assert (decoded(la)[:, -4:] == 255).all()


def test_cmyk_jpeg():
    rgb = face_image(1, size=SIZE)
    cmyk = rgb.convert("CMYK")
    out = decoded(cmyk, "JPEG", quality=95).astype(int)
    assert np.mean(np.abs(out - np.asarray(cmyk.convert("RGB"), dtype=int))) < 4


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_grey_is_scaled_not_clipped(fmt):
    values = np.zeros((SIZE, SIZE), dtype=np.uint16)
    values[:, : SIZE // 2] = 32896  # 128 * 257
    values[:, SIZE // 2 :] = 65535
    out = decoded(Image.fromarray(values), fmt)
    assert (out[:, :8] == 128).all()
    assert (out[:, -8:] == 255).all()


def test_32_bit_integer_and_float_greys():
    wide = Image.fromarray(np.full((SIZE, SIZE), 257 * 100, dtype=np.int32), mode="I")
    assert (decoded(wide, "TIFF") == 100).all()
    floats = Image.fromarray(np.full((SIZE, SIZE), 77.4, dtype=np.float32), mode="F")
    assert (decoded(floats, "TIFF") == 77).all()


def test_pixel_limit_refuses_before_decoding():
    data = encode(Image.new("RGB", (1200, 1000)), "PNG")
    with pytest.raises(ImageDecodeError, match="over the limit") as err:
        decode_image(data, SIZE, max_pixels=1_000_000)
    assert err.value.kind == "too_many_pixels"
    assert decode_image(data, SIZE, max_pixels=1_200_000).shape == (SIZE, SIZE, 3)


@pytest.mark.parametrize(
    "data,kind",
    [
        (b"", "empty"),
        (b"this is not an image at all", "not_an_image"),
        (encode(face_image(0, size=128), "JPEG")[:700], "corrupt"),
        (encode(face_image(0, size=128), "PNG")[:300], "corrupt"),
    ],
)
@pytest.mark.parametrize("fast", [False, True])
def test_bad_bytes_raise_clear_errors(data, kind, fast):
    with pytest.raises(ImageDecodeError) as err:
        decode_image(data, SIZE, fast=fast)
    assert err.value.kind == kind
    assert str(err.value)


def test_resize_filter_names():
    assert resize_filter_name(2) == "bilinear"
    assert resize_filter_name(3) == "bicubic"
    assert resize_filter_name("lanczos") == "lanczos"
    with pytest.raises(ValueError):
        resize_filter_name(42)


def test_fast_jpeg_decode_stays_close_to_the_exact_path():
    data = encode(face_image(2, size=1024), "JPEG", quality=90)
    exact = decode_image(data, 384).astype(int)
    fast = decode_image(data, 384, fast=True).astype(int)
    assert np.abs(exact - fast).mean() <= 2.0
    exif = Image.Exif()
    exif[0x0112] = 6  # a square face decoded straight at 384 px must still be turned
    rotated = encode(face_image(2, size=1024), "JPEG", quality=90, exif=exif.tobytes())
    assert np.abs(decode_image(rotated, 384).astype(int) - decode_image(rotated, 384, fast=True)).mean() <= 2.0
    assert np.abs(decode_image(rotated, 384).astype(int) - exact).mean() > 10  # the turn is visible
    grey = encode(face_image(2, size=512).convert("L"), "JPEG")  # grey JPEGs and other formats take the exact path
    np.testing.assert_array_equal(decode_image(grey, 384, fast=True), decode_image(grey, 384))
    png = encode(face_image(2, size=512), "PNG")
    np.testing.assert_array_equal(decode_image(png, 384, fast=True), decode_image(png, 384))

"""Decoding: EXIF-rotated, grayscale, RGBA, CMYK and 16-bit inputs come out as upright 8-bit RGB."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from maskds.core import images


def _upright() -> Image.Image:
    """A 60 wide x 80 tall picture: red top half, blue bottom half, so orientation is visible."""
    arr = np.zeros((80, 60, 3), np.uint8)
    arr[:40] = (220, 20, 20)
    arr[40:] = (20, 20, 220)
    return Image.fromarray(arr)


# Orientation tag -> how the stored pixels relate to the upright picture.
STORED = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,   # tag 6 = rotate 90 clockwise to display
    8: Image.Transpose.ROTATE_270,  # tag 8 = rotate 90 counter-clockwise to display
}


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_exif_rotated_comes_out_upright(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    _upright().transpose(STORED[orientation]).save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    out = images.load_rgb(buf.getvalue())
    assert out.shape == (80, 60, 3)
    assert out[:30].mean(axis=(0, 1))[0] > 180 and out[50:].mean(axis=(0, 1))[2] > 180


def _roundtrip(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_grayscale_becomes_rgb():
    gray = Image.fromarray(np.full((20, 10), 77, np.uint8), mode="L")
    out = images.load_rgb(_roundtrip(gray, "PNG"))
    assert out.shape == (20, 10, 3) and out.dtype == np.uint8
    assert (out == 77).all()


def test_rgba_is_composited_on_white():
    arr = np.zeros((10, 10, 4), np.uint8)
    arr[:5] = (10, 200, 10, 255)  # opaque green top, transparent bottom
    out = images.load_rgb(_roundtrip(Image.fromarray(arr, mode="RGBA"), "PNG"))
    assert out.shape == (10, 10, 3)
    assert tuple(out[0, 0]) == (10, 200, 10) and tuple(out[9, 9]) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    out = images.load_rgb(_roundtrip(cmyk, "JPEG"))
    assert out.shape == (16, 16, 3)
    r, g, b = out.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60


def test_16bit_gray_is_scaled_not_clipped():
    arr = np.full((8, 8), 32768, np.uint16)  # half of the 16-bit range
    img = Image.frombytes("I;16", (8, 8), arr.astype("<u2").tobytes())
    data = _roundtrip(img, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # really stored as 16-bit
    out = images.load_rgb(data)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert abs(int(out[0, 0, 0]) - 128) <= 1


def test_prepare_takes_height_then_width():
    img = images.prepare(_roundtrip(_upright(), "PNG"), (64, 48))
    assert img.size == (48, 64)  # PIL size is (width, height)
    assert np.asarray(img)[:20].mean(axis=(0, 1))[0] > 180  # still upright


def test_decode_cached_matches_general_decoder():
    data = images.encode_jpeg(_upright())
    assert np.abs(images.decode_cached(data).astype(int) - images.load_rgb(data)).max() <= 2


def test_inference_pixels_equal_what_the_training_loader_decodes_from_the_cache(synth_data, tiny_cache):
    import datasets

    from maskds.data.cache import load_cache

    dsd, meta = load_cache(tiny_cache)
    train = dsd["train"].cast_column("image", datasets.Image(decode=False))
    for row in (train[0], train[len(train) - 1]):
        from_cache = images.decode_cached(row["image"]["bytes"])
        from_raw = images.cached_pixels(synth_data / row["path"], tuple(meta["args"]["size"]))
        assert np.array_equal(from_cache, from_raw)

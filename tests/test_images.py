"""Decoding rules: every mode becomes the network's channel count with the documented conversions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from resnet_cli.data.images import ImageDecodeError, decode, decode_with_mode, is_image_name
from tests.images import png_bytes


def _jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **kwargs)
    return buffer.getvalue()


def test_extensions_any_case():
    assert is_image_name("a.JPG") and is_image_name("b.Tiff") and is_image_name("c.webp")
    assert not is_image_name("notes.txt") and not is_image_name("jpg")


def test_greyscale_to_rgb_and_back():
    grey = Image.new("L", (4, 3), 77)
    rgb = decode(png_bytes(grey), channels=3)
    assert rgb.mode == "RGB" and rgb.size == (4, 3)
    assert np.asarray(rgb)[0, 0].tolist() == [77, 77, 77]
    red = Image.new("RGB", (2, 2), (255, 0, 0))
    luma = decode(png_bytes(red), channels=1)
    assert luma.mode == "L" and int(np.asarray(luma)[0, 0]) == 76  # ITU-R 601-2: 0.299 * 255


def test_alpha_is_composited_on_white_not_dropped():
    rgba = Image.new("RGBA", (2, 2), (10, 20, 30, 0))  # fully transparent, odd stored colour
    rgba.putpixel((0, 0), (0, 0, 0, 255))
    out = np.asarray(decode(png_bytes(rgba), channels=3))
    assert out[0, 0].tolist() == [0, 0, 0]
    assert out[1, 1].tolist() == [255, 255, 255]  # not (10, 20, 30)
    half = Image.new("LA", (1, 1), (0, 128))
    assert int(np.asarray(decode(png_bytes(half), channels=1))[0, 0]) in (127, 128)


def test_palette_with_transparency():
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    out = np.asarray(decode(png_bytes(pal, transparency=0), channels=3))
    assert out[0, 0].tolist() == [255, 255, 255]  # transparent index -> background
    assert out[0, 1].tolist() == [200, 0, 0]
    image, mode = decode_with_mode(png_bytes(pal), channels=3)
    assert mode == "P" and np.asarray(image)[0, 1].tolist() == [200, 0, 0]


def test_sixteen_bit_is_scaled_not_clipped():
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    image, mode = decode_with_mode(png_bytes(Image.fromarray(values)), channels=1)
    assert mode.startswith("I")
    assert np.asarray(image).tolist() == [[0, 1, 128, 255]]  # convert("L") would clip to [0, 255, 255, 255]


def test_cmyk_jpeg():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red
    out = np.asarray(decode(_jpeg_bytes(cmyk), channels=3)).astype(int)
    r, g, b = out[4, 4]
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (6, 2), (0, 0, 0))
    image.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    out = decode(_jpeg_bytes(image, exif=exif.tobytes(), quality=100), channels=1)
    assert out.size == (2, 6)
    assert int(np.asarray(out)[0, 1]) > 200  # the white corner moved to the top right


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"hello, I am text", "not an image"),
    ],
)
def test_undecodable_bytes(data, fragment):
    with pytest.raises(ImageDecodeError, match=fragment):
        decode(data, channels=3)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_fail_on_full_decode(fmt):
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, format=fmt)
    data = buffer.getvalue()
    # The header alone opens fine; only decoding every pixel finds the damage.
    Image.open(io.BytesIO(data[: len(data) // 2]))
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode(data[: len(data) // 2], channels=3)

"""Decoding one image file into the pixels the network sees, whatever the file's mode.

Rules (every image ends as 8-bit ``L`` for one input channel or ``RGB`` for three):

* EXIF orientation is applied first, so a rotated phone photo is seen upright.
* Alpha (``LA``, ``RGBA``, ``PA``, palette images with a transparent colour) is composited on a
  background grey level, white (255) by default, never dropped: dropping alpha shows whatever colour the
  invisible pixels happen to store.
* 16-bit greyscale (``I;16``) is scaled to 8 bits (``round(v / 257)``), not clipped at 255; 32-bit
  integer images (``I``) are read as 16-bit values and scaled the same way; float images (``F``) are read
  as intensities in [0, 1].
* ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` and bilevel images are converted with Pillow's own conversions.
* RGB becomes one channel by Pillow's ITU-R 601-2 luma; greyscale becomes three by repetition.

Only Pillow and NumPy are used here, so scanning and splitting never import torch.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: File extensions taken as images, compared case-insensitively.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

_ALPHA_MODES = {"LA", "La", "RGBA", "RGBa", "PA"}


class ImageDecodeError(ValueError):
    """The bytes are not a complete, decodable image; the message says why in a few words."""


#: Modes whose pixels carry no colour: a dataset made only of these trains a one-channel network.
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"})


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def decode(data: bytes, channels: int, background: int = 255) -> Image.Image:
    """Decode a whole image file's bytes into an ``L`` (channels=1) or ``RGB`` (channels=3) image.

    Raises:
        ImageDecodeError: empty, truncated, not an image, or too large to be safe.
    """
    return decode_with_mode(data, channels, background)[0]


def decode_with_mode(data: bytes, channels: int, background: int = 255) -> tuple[Image.Image, str]:
    """Like :func:`decode`, also returning the file's own Pillow mode (``"L"``, ``"RGBA"``, ``"I;16"``...)."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    return _decode(io.BytesIO(data), channels, background)


def load(path: str | Path, channels: int, background: int = 255) -> Image.Image:
    """Read and decode one file (see :func:`decode`), straight from disk without an extra copy.

    Raises:
        ImageDecodeError: as :func:`decode`.
        OSError: the file cannot be opened.
    """
    with open(path, "rb") as handle:
        return _decode(handle, channels, background)[0]


def _decode(source: IO[bytes], channels: int, background: int) -> tuple[Image.Image, str]:
    # Pillow refuses images over twice its MAX_IMAGE_PIXELS (about 179 million) as decompression bombs;
    # between one and two times it only warns.
    try:
        image = Image.open(source)
        image.load()  # decode every pixel: opening only reads the header
    except UnidentifiedImageError:
        empty = source.seek(0, io.SEEK_END) == 0
        raise ImageDecodeError("empty file (0 bytes)" if empty else "not an image Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"too many pixels to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(_short_reason(exc)) from None
    try:
        return to_mode(image, channels, background), image.mode
    except (OSError, ValueError) as exc:
        raise ImageDecodeError(f"cannot convert {image.mode} pixels: {_short_reason(exc)}") from None


def to_mode(image: Image.Image, channels: int, background: int = 255) -> Image.Image:
    """Apply the module's rules to an opened image; returns ``L`` or ``RGB``."""
    if image.getexif().get(0x0112, 1) not in (None, 1):  # EXIF orientation other than "upright"
        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "P":
        mode = "PA" if "transparency" in image.info else "RGB"
        image = image.convert("RGBA" if mode == "PA" else "RGB")
        mode = image.mode
    if mode in _ALPHA_MODES:
        image = _composite(image, background)
    elif mode.startswith("I;16") or mode == "I":
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), "L")
    elif mode == "F":
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8), "L")
    elif mode not in ("L", "RGB"):
        image = image.convert("RGB")  # 1, CMYK, YCbCr, LAB, HSV, RGBX, ...
    if channels == 1 and image.mode != "L":
        image = image.convert("L")
    elif channels == 3 and image.mode != "RGB":
        image = image.convert("RGB")
    return image


def _composite(image: Image.Image, background: int) -> Image.Image:
    grey = image.mode.startswith("L")
    rgba = image.convert("LA" if grey else "RGBA")
    base = Image.new(rgba.mode[:-1], rgba.size, background if grey else (background,) * 3)
    base.paste(rgba, mask=rgba.getchannel("A"))
    return base


def _short_reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return "truncated file (the image data ends early)"
    return text.splitlines()[0][:160]

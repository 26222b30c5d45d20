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

Safety (files come from anywhere):

* Only regular files are opened: a FIFO named ``x.png`` would block forever and a link to ``/dev/zero``
  would read until memory runs out. The path is checked with ``stat`` first (opening some devices has
  side effects), then opened with ``O_NONBLOCK`` and checked again with ``fstat``; at most
  :func:`max_file_bytes` bytes are read.
* An image with more pixels than ``max_pixels`` (by default Pillow's ``MAX_IMAGE_PIXELS``, about 89.5
  million) is refused from its header, before any pixel is decoded. Pillow itself only warns between one and
  two times its limit; that warning is silenced here because the check above replaces it.

Only Pillow and NumPy are used here, so scanning and splitting never import torch.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from resnet_cli.fs import special_file_kind

#: File extensions taken as images, compared case-insensitively.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

_ALPHA_MODES = {"LA", "La", "RGBA", "RGBa", "PA"}


class ImageDecodeError(ValueError):
    """The bytes are not a complete, decodable image; the message says why in a few words."""


#: Modes whose pixels carry no colour: a dataset made only of these trains a one-channel network.
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"})


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def default_max_pixels() -> int | None:
    """Pillow's own limit (``PIL.Image.MAX_IMAGE_PIXELS``, read at call time; ``None``: no limit)."""
    return Image.MAX_IMAGE_PIXELS


def max_file_bytes(max_pixels: int | None) -> int:
    """The most bytes read from one file: enough for ``max_pixels`` uncompressed 16-bit RGBA pixels and
    their metadata, so no real image is cut short, yet a growing or endless file cannot exhaust memory."""
    pixels = max_pixels if max_pixels is not None else 2**31
    return 64 * 2**20 + 8 * pixels


def decode(data: bytes, channels: int, background: int = 255, max_pixels: int | None = None) -> Image.Image:
    """Decode a whole image file's bytes into an ``L`` (channels=1) or ``RGB`` (channels=3) image.

    Args:
        max_pixels: refuse images with more pixels (width x height) than this; ``None``: Pillow's limit.

    Raises:
        ImageDecodeError: empty, truncated, not an image, or more pixels than ``max_pixels``.
    """
    return decode_with_mode(data, channels, background, max_pixels)[0]


def decode_with_mode(
    data: bytes, channels: int, background: int = 255, max_pixels: int | None = None
) -> tuple[Image.Image, str]:
    """Like :func:`decode`, also returning the file's own Pillow mode (``"L"``, ``"RGBA"``, ``"I;16"``...)."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    return _decode(io.BytesIO(data), channels, background, max_pixels)


def read_file(path: str | os.PathLike[str], max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file, at most ``max_bytes`` (default :func:`max_file_bytes` of Pillow's limit).

    Raises:
        ImageDecodeError: not a regular file (FIFO, device, socket, folder) or larger than ``max_bytes``.
        OSError: the file cannot be opened or read.
    """
    limit = max_bytes if max_bytes is not None else max_file_bytes(default_max_pixels())
    with _open_regular(path) as fd:
        size = os.fstat(fd).st_size
        if size > limit:
            raise ImageDecodeError(_too_big(size, limit))
        chunks: list[bytes] = []
        read = 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - read))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            read += len(chunk)
            if read > limit:  # the file grew while being read
                raise ImageDecodeError(_too_big(read, limit))


def load(path: str | Path, channels: int, background: int = 255, max_pixels: int | None = None) -> Image.Image:
    """Read and decode one regular file (see :func:`decode`), straight from disk without an extra copy.

    Raises:
        ImageDecodeError: as :func:`decode`, or not a regular file.
        OSError: the file cannot be opened.
    """
    with _open_regular(path) as fd, os.fdopen(os.dup(fd), "rb") as handle:
        return _decode(handle, channels, background, max_pixels)[0]


@contextlib.contextmanager
def _open_regular(path: str | os.PathLike[str]) -> Iterator[int]:
    """A read-only descriptor of ``path``, which must be a regular file (links followed)."""
    kind = special_file_kind(os.stat(path).st_mode)  # before opening: opening a device can have side effects
    if kind:
        raise ImageDecodeError(f"not a regular file ({kind}): only image files are read")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        kind = special_file_kind(os.fstat(fd).st_mode)  # it may have been swapped between stat and open
        if kind:
            raise ImageDecodeError(f"not a regular file ({kind}): only image files are read")
        yield fd
    finally:
        os.close(fd)


def _too_big(size: int, limit: int) -> str:
    return f"file too large ({size:,} bytes, over the {limit:,} bytes read from one image)"


# Raising Pillow's limit means changing a module global; one lock keeps threads from restoring each other's value.
_PILLOW_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _pillow_limit(limit: int | None) -> Iterator[None]:
    """Let Pillow open images up to ``limit`` pixels (it refuses twice its own limit outright)."""
    current = Image.MAX_IMAGE_PIXELS
    if current is None or (limit is not None and limit <= current):
        yield
        return
    with _PILLOW_LIMIT_LOCK:
        Image.MAX_IMAGE_PIXELS = limit
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = current


def _decode(source: IO[bytes], channels: int, background: int, max_pixels: int | None) -> tuple[Image.Image, str]:
    limit = max_pixels if max_pixels is not None else default_max_pixels()
    try:
        # Pillow warns (on stderr) between one and two times its limit and decodes anyway; the check on
        # the header below refuses those images instead, so its warning would only repeat it.
        with warnings.catch_warnings(), _pillow_limit(limit):
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
            width, height = image.size
            if limit is not None and width * height > limit:
                raise ImageDecodeError(
                    f"too many pixels ({width}x{height} = {width * height:,}, over the limit of {limit:,}): "
                    "a possible decompression bomb; raise the limit with --max-pixels if the image is genuine"
                )
            image.load()  # decode every pixel: opening only reads the header
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        empty = source.seek(0, io.SEEK_END) == 0
        raise ImageDecodeError("empty file (0 bytes)" if empty else "not an image Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"too many pixels to decode safely ({exc}); raise the limit with --max-pixels") from None
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

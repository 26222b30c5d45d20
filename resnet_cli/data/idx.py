"""Reader for IDX files, the format of MNIST and Fashion-MNIST (raw or gzipped), with bounded memory.

An IDX file is a big-endian header (two zero bytes, a type byte, a dimension count, then one 32-bit size per
dimension) followed by the values in C order. Only unsigned bytes are read here: images (magic 2051, three
dimensions: count, rows, columns) and labels (magic 2049, one dimension). The header is checked against fixed
limits before anything is read or allocated, and the payload is read in chunks up to exactly the size the
header implies, plus one byte to detect trailing data, so a lying header or a gzip bomb never decompresses
more than that. Every problem is a :class:`DatasetError` naming the file.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from resnet_cli.errors import DatasetError
from resnet_cli.fs import special_file_kind

if TYPE_CHECKING:
    import numpy as np

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
# Far above any IDX dataset in use (EMNIST ByClass: 814,255 images of 28x28, 638 MB) and far below what would
# exhaust a workstation's memory; a header beyond them is corrupt or hostile.
MAX_ITEMS = 10_000_000
MAX_SIDE = 1024
MAX_PAYLOAD = 2 * 1024**3
_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_TYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "short", 0x0C: "int", 0x0D: "float", 0x0E: "double"}


def read_idx_images(path: str | os.PathLike[str]) -> np.ndarray:
    """The images of an IDX3 file (magic 2051) as a ``uint8`` array of shape ``(count, rows, columns)``.

    Raises:
        DatasetError: unreadable, not IDX images, an absurd header, truncated or with trailing data.
    """
    import numpy as np

    path = Path(path)
    with _open(path) as stream:
        count, rows, cols = _header(stream, path, IMAGES_MAGIC, 3)
        for name, side in (("rows", rows), ("columns", cols)):
            if not 1 <= side <= MAX_SIDE:
                raise DatasetError(f"{path}: header gives {side} {name} per image (1 to {MAX_SIDE} allowed): corrupt")
        if count * rows * cols > MAX_PAYLOAD:
            raise DatasetError(
                f"{path}: header gives {count} images of {rows}x{cols} ({count * rows * cols:,} bytes, more than "
                f"the {MAX_PAYLOAD:,} allowed): corrupt, or not a dataset this tool reads"
            )
        payload = _payload(stream, path, count * rows * cols, f"{count} images of {rows}x{cols}")
    return np.frombuffer(payload, dtype=np.uint8).reshape(count, rows, cols)


def read_idx_labels(path: str | os.PathLike[str], classes: int | None = None) -> np.ndarray:
    """The labels of an IDX1 file (magic 2049) as a ``uint8`` array of shape ``(count,)``.

    Args:
        path: the file, raw or gzipped.
        classes: when given, every label must be in ``0 .. classes - 1``.

    Raises:
        DatasetError: unreadable, not IDX labels, an absurd header, truncated, trailing data, or a label out of range.
    """
    import numpy as np

    path = Path(path)
    with _open(path) as stream:
        (count,) = _header(stream, path, LABELS_MAGIC, 1)
        payload = _payload(stream, path, count, f"{count} labels")
    labels = np.frombuffer(payload, dtype=np.uint8)
    if classes is not None and labels.size and int(labels.max()) >= classes:
        index = int(np.argmax(labels >= classes))
        raise DatasetError(
            f"{path}: label {int(labels[index])} at position {index} is out of range 0..{classes - 1}: "
            "not a labels file of this dataset"
        )
    return labels


def read_idx_pair(
    images: str | os.PathLike[str], labels: str | os.PathLike[str], classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images and their labels, checked to be as many.

    Raises:
        DatasetError: as the two readers, or the counts differ.
    """
    pixels = read_idx_images(images)
    targets = read_idx_labels(labels, classes)
    if len(pixels) != len(targets):
        raise DatasetError(
            f"{images} holds {len(pixels)} images but {labels} holds {len(targets)} labels: "
            "use the labels file that belongs to these images"
        )
    return pixels, targets


@contextmanager
def _open(path: Path) -> Iterator[io.BufferedIOBase]:
    """``path`` opened for reading, decompressed when it starts as gzip does (whatever its name)."""
    try:
        kind = special_file_kind(path.stat().st_mode)
        if kind:
            raise DatasetError(f"{path} is {kind}, not a file: pass an IDX file")
        raw = path.open("rb")
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if raw.read(2) == _GZIP_MAGIC:
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped
        else:
            raw.seek(0)
            yield raw
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise DatasetError(f"{path} is a damaged gzip file ({exc}): download it again") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        raw.close()


def _header(stream: io.BufferedIOBase, path: Path, magic: int, dims: int) -> tuple[int, ...]:
    head = stream.read(4)
    if len(head) < 4:
        raise DatasetError(f"{path} is too short to be an IDX file ({len(head)} bytes)")
    (found,) = struct.unpack(">I", head)
    if found != magic:
        what = "images" if magic == IMAGES_MAGIC else "labels"
        if head[:2] == b"\0\0" and head[2] in _TYPES:
            seen = f"IDX {_TYPES[head[2]]} data in {head[3]} dimension(s) (magic {found})"
        else:
            seen = f"magic number {found}, not IDX"
        raise DatasetError(f"{path}: {seen}, expected IDX {what} (magic {magic}): check the file name and source")
    sizes_raw = stream.read(4 * dims)
    if len(sizes_raw) < 4 * dims:
        raise DatasetError(f"{path} is truncated inside its header: download it again")
    sizes = struct.unpack(f">{dims}I", sizes_raw)
    if sizes[0] > MAX_ITEMS:
        raise DatasetError(f"{path}: header gives {sizes[0]:,} items (at most {MAX_ITEMS:,} allowed): corrupt")
    return sizes


def _payload(stream: io.BufferedIOBase, path: Path, size: int, what: str) -> bytearray:
    """Exactly ``size`` bytes, read in chunks so memory follows what is really there; then checks nothing follows.

    Raises:
        DatasetError: fewer bytes than ``size`` (truncated), or more (trailing data).
    """
    buffer = bytearray()
    while len(buffer) < size:
        chunk = stream.read(min(_CHUNK, size - len(buffer)))
        if not chunk:
            raise DatasetError(
                f"{path} is truncated: its header promises {what} ({size:,} bytes) but only {len(buffer):,} follow: "
                "download it again"
            )
        buffer += chunk
    if stream.read(1):
        raise DatasetError(
            f"{path} has data after the {what} its header promises: not a well-formed IDX file, download it again"
        )
    return buffer

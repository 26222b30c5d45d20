"""Atomic writes: a temporary file in the destination's folder, flushed and fsynced, then renamed over it.

A crash, a signal or a full disk leaves either the previous file or the new one, never a torn one, and
the temporary file is removed on failure.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from resnet_cli.errors import OutputExistsError, RunFailedError


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path`` atomically.

    Raises:
        RunFailedError: the write failed (full disk, permissions); ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding, newline="" if "b" not in mode else None) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        _remove_quietly(tmp)
        raise RunFailedError(_describe_os_error(exc, path)) from exc
    except BaseException:
        _remove_quietly(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_write_with(path: str | os.PathLike[str], writer: Callable[[IO[bytes]], None]) -> None:
    """Let ``writer`` fill a binary handle (``torch.save``, ``Figure.savefig``) and commit it atomically."""
    with atomic_open(path, "wb") as handle:
        writer(handle)


def refuse_overwrite(path: Path, force: bool, what: str = "file") -> None:
    """Raise unless ``path`` is free or ``force`` is set.

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is false.
    """
    if path.exists() and not force:
        raise OutputExistsError(f"{what} {path} already exists: pass --force to overwrite it, or choose another path")


def _describe_os_error(exc: OSError, path: Path) -> str:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        hint = "free some space and run again"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "choose a folder you can write to"
    else:
        hint = "check the folder and run again"
    return f"could not write {path}: {reason}; any previous version is intact; {hint}"


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable; not every platform or file system allows opening a folder.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)

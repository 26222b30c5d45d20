"""File-system primitives on the ground floor: atomic writes, refuse-overwrite, the run-folder lock, and the
record of which files in a run folder the tool wrote itself.

Atomic writes: a temporary file in the destination's folder, flushed and fsynced, then renamed over it. A
crash, a signal or a full disk leaves either the previous file or the new one, never a torn one, and the
temporary file is removed on failure. Files are created with the mode the user's umask gives (0666 less the
umask), like any other program's, not mkstemp's private 0600.

Temporary files are named ``.NAME.<random>.tmp``; :func:`remove_stale_temporaries` removes those a killed
process left behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from resnet_cli.errors import OutputExistsError, RunBusyError, RunFailedError

LOCK_NAME = ".resnet.lock"
OWNED_NAME = ".resnet-files.json"
OWNED_FORMAT = "resnet-cli run files"
_TMP_SUFFIX = ".tmp"


def special_file_kind(mode: int) -> str:
    """``""`` for a regular file, else what it is in words ("a FIFO", "a character device", ...), from a
    ``stat`` mode: only regular files are ever read as images or weights."""
    if stat.S_ISREG(mode):
        return ""
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "not a plain file"


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it straight back
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path`` atomically.

    Raises:
        RunFailedError: the write failed (full disk, permissions); ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
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


def refuse_overwrite_unless_owned(path: Path, force: bool, what: str = "file") -> None:
    """Like :func:`refuse_overwrite`, but a file the tool recorded as its own in that folder is regenerated freely.

    Raises:
        OutputExistsError: ``path`` exists, is not the tool's own, and ``force`` is false.
    """
    if path.exists() and not force and path.name not in owned_files(path.parent):
        raise OutputExistsError(
            f"{what} {path} already exists and was not written by resnet: pass --force to overwrite it, "
            "or choose another path"
        )


def remove_stale_temporaries(folder: Path) -> list[str]:
    """Remove ``.NAME.*.tmp`` files an atomic write left behind when its process was killed.

    Call it only while holding the folder's lock, so no live writer's temporary is touched.
    """
    removed: list[str] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        name = entry.name
        if name.startswith(".") and name.endswith(_TMP_SUFFIX) and name.count(".") >= 3 and entry.is_file():
            with contextlib.suppress(OSError):
                entry.unlink()
                removed.append(name)
    return removed


# -- the run-folder lock ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike[str], command: str) -> Iterator[None]:
    """Hold the one-writer lock of a run folder (which must exist) while the block runs.

    The lock is an ``flock`` on ``.resnet.lock``: the kernel releases it when its process dies, however it
    dies, so a stale file from a killed process never blocks anyone. The file names its holder (command,
    pid, host, start time) for the refusal message, and is removed on release.

    Raises:
        RunBusyError: another live process holds the lock (exit 2, naming it).
    """
    import fcntl

    path = Path(folder) / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunBusyError(f"{Path(folder)} is in use by {_describe_holder(path)}: wait for it to finish") from None
        # The holder before us may have removed the file between our open and our lock: lock the live one.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        holder = {"command": command, "pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder) + "\n").encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def check_not_busy(folder: str | os.PathLike[str]) -> None:
    """Refuse at once when a live process holds ``folder``'s lock (without taking it).

    Raises:
        RunBusyError: naming the holder.
    """
    import fcntl

    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        raise RunBusyError(f"{Path(folder)} is in use by {_describe_holder(path)}: wait for it to finish") from None
    finally:
        os.close(fd)


def _describe_holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8") or "{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder["since"])))
        return f"'resnet {holder['command']}' (pid {holder['pid']} on {holder['host']}, since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another resnet process"


# -- what the tool wrote into a run folder ---------------------------------------------------------------------


def owned_files(folder: str | os.PathLike[str]) -> set[str]:
    """Names of the files the tool recorded as written by itself in ``folder`` (empty if none)."""
    try:
        doc = json.loads((Path(folder) / OWNED_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    if not isinstance(doc, dict) or doc.get("format") != OWNED_FORMAT or not isinstance(doc.get("files"), list):
        return set()
    return {name for name in doc["files"] if isinstance(name, str) and name and "/" not in name and name != ".."}


def record_owned(folder: str | os.PathLike[str], names: Iterable[str]) -> None:
    """Add ``names`` (files in ``folder``) to the record of what the tool wrote there."""
    import fcntl

    folder = Path(folder)
    # The record is read, extended and replaced under an flock on the folder itself, so a plot recording a
    # figure while training records its files loses neither entry.
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        current = owned_files(folder)
        new = current | {Path(n).name for n in names}
        if new != current or not (folder / OWNED_NAME).exists():
            doc = {"format": OWNED_FORMAT, "files": sorted(new)}
            atomic_write_text(folder / OWNED_NAME, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    finally:
        os.close(fd)


def remove_owned(folder: str | os.PathLike[str]) -> list[str]:
    """Delete every recorded file of ``folder`` (regular files only, never through a link) and the record."""
    folder = Path(folder)
    removed = []
    for name in sorted(owned_files(folder)):
        path = folder / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(name)
    (folder / OWNED_NAME).unlink(missing_ok=True)
    return removed


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

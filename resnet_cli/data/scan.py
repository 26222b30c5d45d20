"""Scanning an ImageFolder tree and verifying every image by decoding it.

Layout: ``ROOT/<class>/<image>``. Classes are the immediate, non-hidden sub-folders of ``ROOT``, sorted.
Images are found recursively inside each class folder (``ROOT/cat/2019/a.jpg`` belongs to ``cat``), as
torchvision's ``ImageFolder`` does. Hidden files and folders (a leading dot) are ignored at every level,
and so are files directly inside ``ROOT`` (the manifest lives there).

Symbolic links are followed, with one fence: a link never moves an image into another class. A link whose
target lies inside the data folder but outside the link's own class folder (``a/loop -> ..``,
``dog/x.png -> ../cat/y.png``), or a folder link whose target holds the data folder, is not followed; it is
listed in :attr:`ScanResult.skipped`. Links to places outside the data folder (a class kept on another disk)
are followed. A file reached by several paths counts once, under its real location when that is inside the
tree, else under the first path in sorted order.

Names are kept exactly as the file system gives them, with two refusals: two class folders whose names
are one name in two Unicode spellings (NFC ``café`` and NFD ``café``) would silently become two classes,
and a file whose name is not valid UTF-8 cannot be written into the UTF-8 manifest; the first is a
:class:`DatasetError`, the second is listed in :attr:`ScanResult.bad_names` (printable, escaped) for the
caller to refuse or leave out.

A data folder whose sub-folders are all named like parts of a split (``train``, ``val``/``valid``/
``validation``, ``test``) and hold class folders is a pre-split dataset: :func:`find_part_folders` finds it.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from resnet_cli.data.images import (
    ImageDecodeError,
    decode_with_mode,
    default_max_pixels,
    is_image_name,
    max_file_bytes,
    read_file,
)
from resnet_cli.errors import DatasetError

#: Called as ``progress(done, total)`` while verifying.
ProgressFn = Callable[[int, int], None]

#: Folder names (compared case-insensitively) that mark a pre-split dataset, and the part each one is.
PART_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class ImageFile:
    """One image found by the scan. ``path`` is relative to the root, with forward slashes."""

    path: str
    label: str


@dataclass(frozen=True)
class Verified:
    """What decoding one file told us."""

    path: str
    label: str
    sha256: str
    width: int = 0
    height: int = 0
    mode: str = ""  # the file's own Pillow mode
    error: str | None = None


@dataclass
class ScanResult:
    root: Path
    classes: list[str]
    files: list[ImageFile]
    other_files: dict[str, list[str]] = field(default_factory=dict)  # class -> non-image files in it
    aliases: list[tuple[str, str]] = field(default_factory=list)  # (ignored path, kept path) for one file
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): links not followed
    bad_names: list[str] = field(default_factory=list)  # image paths that are not valid UTF-8, escaped


def printable(name: str) -> str:
    """``name`` with bytes that are not UTF-8 (carried as surrogates by ``os``) written as ``\\xff``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace") if not _is_utf8(name) else name


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def scan_folder(root: str | os.PathLike[str], fence: str | os.PathLike[str] | None = None) -> ScanResult:
    """Find classes and image files under ``root`` (see the module's docstring for the rules).

    Args:
        root: the folder holding one sub-folder per class.
        fence: the data folder links may not wander inside (default ``root``); a part folder's parent when
            scanning ``DATA/train``, so a link from ``train/cat`` into ``val/`` is not followed either.

    Raises:
        DatasetError: ``root`` is missing, is a file, has no class folders, has a class folder whose name is
            not UTF-8, or two class folders that are one name in two Unicode spellings.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"data folder {root} does not exist: give a folder laid out as {root}/<class>/<image>")
    if not root.is_dir():
        raise DatasetError(f"{root} is a file, not a folder: give the folder that holds one sub-folder per class")
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise DatasetError(f"cannot read data folder {root}: {exc.strerror}") from exc
    classes = [e.name for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=True)]
    if not classes:
        loose = sum(1 for e in entries if e.is_file() and is_image_name(e.name))
        extra = f" ({loose} images lie directly in it)" if loose else ""
        raise DatasetError(
            f"no class folders in {root}{extra}: put each class's images in its own sub-folder, {root}/<class>/<image>"
        )
    _check_class_names(root, classes)

    fence_real = os.path.realpath(fence if fence is not None else root)
    found: dict[str, list[tuple[str, str, bool]]] = {}  # real path -> [(rel path, class, via link)]
    other: dict[str, list[str]] = {}
    skipped: list[tuple[str, str]] = []
    bad_names: list[str] = []
    usable: list[str] = []
    root_real = os.path.realpath(root)
    for label in classes:
        escape = _link_escape(os.path.realpath(root / label), root_real, fence_real)
        if escape:
            skipped.append((label, escape))
            continue
        usable.append(label)
        for rel, real, via_link in _walk_class(root, label, fence_real, skipped):
            if not is_image_name(rel):
                other.setdefault(label, []).append(printable(rel))
            elif not _is_utf8(rel):
                bad_names.append(printable(rel))
            else:
                found.setdefault(real, []).append((rel, label, via_link))

    files: list[ImageFile] = []
    aliases: list[tuple[str, str]] = []
    for real, candidates in found.items():
        inside = real.startswith(fence_real + os.sep)
        # Prefer the path that is the file itself, then sorted order: deterministic whatever the walk order.
        candidates.sort(key=lambda c: (c[2] if inside else False, c[0]))
        kept = candidates[0]
        files.append(ImageFile(kept[0], kept[1]))
        aliases.extend((c[0], kept[0]) for c in candidates[1:])
    files.sort(key=lambda f: f.path)
    aliases.sort()
    return ScanResult(
        root=root,
        classes=usable,
        files=files,
        other_files=other,
        aliases=aliases,
        skipped=sorted(skipped),
        bad_names=sorted(bad_names),
    )


def _check_class_names(root: Path, classes: list[str]) -> None:
    bad = [c for c in classes if not _is_utf8(c)]
    if bad:
        raise DatasetError(
            f"class folder {root / printable(bad[0])} has a name that is not valid UTF-8 and cannot be written "
            "into the manifest: rename it"
        )
    spellings: dict[str, list[str]] = {}
    for c in classes:
        spellings.setdefault(unicodedata.normalize("NFC", c), []).append(c)
    for names in spellings.values():
        if len(names) > 1:
            shown = " and ".join(f"{root / n} ({n!a})" for n in names)
            raise DatasetError(
                f"class folders {shown} are one name in different Unicode spellings (NFC and NFD) and would "
                "become separate classes: merge them into one folder"
            )


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _link_escape(real: str, class_real: str, fence_real: str) -> str:
    """Why a link to ``real`` must not be followed from inside the class folder ``class_real``; ``""`` if it may."""
    if _inside(fence_real, real):
        return "a link to a folder that holds the data folder (a loop): not followed"
    if _inside(real, fence_real) and not _inside(real, class_real):
        target = Path(os.path.relpath(real, fence_real)).as_posix()
        return f"a link out of its class folder to {printable(target)} in the data folder: not followed"
    return ""


def _walk_class(
    root: Path, label: str, fence_real: str, skipped: list[tuple[str, str]]
) -> Iterator[tuple[str, str, bool]]:
    """Yield ``(relative path, real path, reached through a link)`` for every non-hidden file of a class.

    Links leaving the class inside the data folder are appended to ``skipped`` instead.
    """
    seen_dirs: set[str] = set()
    top = root / label
    class_real = os.path.realpath(top)
    for folder, dirs, names in os.walk(top, followlinks=True):
        real_folder = os.path.realpath(folder)
        if real_folder in seen_dirs:  # a link loop or a second link to the same folder
            dirs[:] = []
            continue
        seen_dirs.add(real_folder)
        rel_folder = Path(folder).relative_to(root)
        kept = []
        for name in sorted(d for d in dirs if not d.startswith(".")):
            full = os.path.join(folder, name)
            escape = _link_escape(os.path.realpath(full), class_real, fence_real) if os.path.islink(full) else ""
            if escape:
                skipped.append((printable((rel_folder / name).as_posix()), escape))
            else:
                kept.append(name)
        dirs[:] = kept
        for name in sorted(names):
            if name.startswith("."):
                continue
            full = os.path.join(folder, name)
            real = os.path.realpath(full)
            via_link = real != os.path.abspath(full)
            rel = (rel_folder / name).as_posix()
            escape = _link_escape(real, class_real, fence_real) if via_link else ""
            if escape:
                skipped.append((printable(rel), escape))
                continue
            yield rel, real, via_link


def find_part_folders(root: str | os.PathLike[str]) -> dict[str, str] | None:
    """``{part: folder name}`` when ``root`` is a pre-split dataset, else ``None``.

    Pre-split: every non-hidden sub-folder of ``root`` is named like a part (:data:`PART_FOLDERS`, any case),
    there are at least two, one is ``train``, and each holds at least one non-hidden sub-folder (its classes).

    Raises:
        DatasetError: two folders name the same part (``val`` and ``valid``).
    """
    root = Path(root)
    try:
        folders = sorted(e.name for e in os.scandir(root) if not e.name.startswith(".") and e.is_dir())
    except OSError:
        return None
    if len(folders) < 2 or any(f.lower() not in PART_FOLDERS for f in folders):
        return None
    parts: dict[str, str] = {}
    for name in folders:
        part = PART_FOLDERS[name.lower()]
        if part in parts:
            raise DatasetError(
                f"{root / parts[part]} and {root / name} both look like the {part} part: keep one of them"
            )
        parts[part] = name
    if "train" not in parts:
        return None
    for name in parts.values():
        try:
            if not any(not e.name.startswith(".") and e.is_dir() for e in os.scandir(root / name)):
                return None
        except OSError:
            return None
    return {part: parts[part] for part in ("train", "val", "test") if part in parts}


def verify_files(
    root: Path,
    files: Sequence[ImageFile],
    workers: int | None = None,
    progress: ProgressFn | None = None,
    channels: int = 3,
    max_pixels: int | None = None,
) -> list[Verified]:
    """Read, hash (SHA-256) and fully decode every file, in parallel processes.

    Only regular files are read (see :func:`resnet_cli.data.images.read_file`); images with more pixels than
    ``max_pixels`` (default: Pillow's limit) are refused from their header.

    Returns one :class:`Verified` per file, in the input's order; unreadable files carry ``error``.
    """
    # Resolved here, so worker processes use this process's limit whatever their start method.
    limit = max_pixels if max_pixels is not None else default_max_pixels()
    jobs = [(str(root / f.path), f.path, f.label, channels, limit) for f in files]
    total = len(jobs)
    workers = max(1, workers if workers is not None else min(8, os.cpu_count() or 1))
    results: list[Verified] = []
    if progress:
        progress(0, total)
    if workers == 1 or total < 64:
        for job in jobs:
            results.append(_verify_one(job))
            if progress and (len(results) % 64 == 0 or len(results) == total):
                progress(len(results), total)
        return results
    # fork is cheapest where it exists; this path never touches torch, so forking is safe.
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    chunk = max(8, min(256, total // (workers * 8) or 1))
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        for item in pool.map(_verify_one, jobs, chunksize=chunk):
            results.append(item)
            if progress and (len(results) % 256 == 0 or len(results) == total):
                progress(len(results), total)
    return results


def _verify_one(job: tuple[str, str, str, int, int | None]) -> Verified:
    full, rel, label, channels, limit = job
    try:
        data = read_file(full, max_file_bytes(limit))
    except ImageDecodeError as exc:
        return Verified(rel, label, "", error=str(exc))
    except OSError as exc:
        reason = "broken link (its target is missing)" if os.path.islink(full) else (exc.strerror or str(exc))
        return Verified(rel, label, "", error=reason)
    digest = hashlib.sha256(data).hexdigest()
    try:
        image, mode = decode_with_mode(data, channels, max_pixels=limit)
    except ImageDecodeError as exc:
        return Verified(rel, label, digest, error=str(exc))
    return Verified(rel, label, digest, image.width, image.height, mode)

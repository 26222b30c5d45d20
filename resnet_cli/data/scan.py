"""Scanning an ImageFolder tree and verifying every image by decoding it.

Layout: ``ROOT/<class>/<image>``. Classes are the immediate, non-hidden sub-folders of ``ROOT``, sorted.
Images are found recursively inside each class folder (``ROOT/cat/2019/a.jpg`` belongs to ``cat``), as
torchvision's ``ImageFolder`` does. Hidden files and folders (a leading dot) are ignored at every level,
and so are files directly inside ``ROOT`` (the manifest lives there). Symbolic links are followed; a file
reached by several paths counts once, under its real location when that is inside the tree, else under the
first path in sorted order.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from resnet_cli.data.images import ImageDecodeError, decode_with_mode, is_image_name
from resnet_cli.errors import DatasetError

#: Called as ``progress(done, total)`` while verifying.
ProgressFn = Callable[[int, int], None]


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


def scan_folder(root: str | os.PathLike[str]) -> ScanResult:
    """Find classes and image files under ``root`` (see the module's docstring for the rules).

    Raises:
        DatasetError: ``root`` is missing, is a file, or has no class folders.
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

    found: dict[str, list[tuple[str, str, bool]]] = {}  # real path -> [(rel path, class, via link)]
    other: dict[str, list[str]] = {}
    root_real = os.path.realpath(root)
    for label in classes:
        for rel, real, via_link in _walk_class(root, label):
            if is_image_name(rel):
                found.setdefault(real, []).append((rel, label, via_link))
            else:
                other.setdefault(label, []).append(rel)

    files: list[ImageFile] = []
    aliases: list[tuple[str, str]] = []
    for real, candidates in found.items():
        inside = real.startswith(root_real + os.sep)
        # Prefer the path that is the file itself, then sorted order: deterministic whatever the walk order.
        candidates.sort(key=lambda c: (c[2] if inside else False, c[0]))
        kept = candidates[0]
        files.append(ImageFile(kept[0], kept[1]))
        aliases.extend((c[0], kept[0]) for c in candidates[1:])
    files.sort(key=lambda f: f.path)
    aliases.sort()
    return ScanResult(root=root, classes=classes, files=files, other_files=other, aliases=aliases)


def _walk_class(root: Path, label: str):
    """Yield ``(relative path, real path, reached through a link)`` for every non-hidden file of a class."""
    seen_dirs: set[str] = set()
    top = root / label
    for folder, dirs, names in os.walk(top, followlinks=True):
        real_folder = os.path.realpath(folder)
        if real_folder in seen_dirs:  # a link loop or a second link to the same folder
            dirs[:] = []
            continue
        seen_dirs.add(real_folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel_folder = Path(folder).relative_to(root)
        for name in sorted(names):
            if name.startswith("."):
                continue
            full = os.path.join(folder, name)
            real = os.path.realpath(full)
            yield (rel_folder / name).as_posix(), real, real != os.path.abspath(full)


def verify_files(
    root: Path,
    files: Sequence[ImageFile],
    workers: int | None = None,
    progress: ProgressFn | None = None,
    channels: int = 3,
) -> list[Verified]:
    """Read, hash (SHA-256) and fully decode every file, in parallel processes.

    Returns one :class:`Verified` per file, in the input's order; unreadable files carry ``error``.
    """
    jobs = [(str(root / f.path), f.path, f.label, channels) for f in files]
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


def _verify_one(job: tuple[str, str, str, int]) -> Verified:
    full, rel, label, channels = job
    try:
        data = Path(full).read_bytes()
    except OSError as exc:
        reason = "broken link (its target is missing)" if os.path.islink(full) else (exc.strerror or str(exc))
        return Verified(rel, label, "", error=reason)
    digest = hashlib.sha256(data).hexdigest()
    try:
        image, mode = decode_with_mode(data, channels)
    except ImageDecodeError as exc:
        return Verified(rel, label, digest, error=str(exc))
    return Verified(rel, label, digest, image.width, image.height, mode)

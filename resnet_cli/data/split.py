"""Seeded, stratified train/val/test manifests.

Every class is split on its own with scikit-learn's ``train_test_split`` (first the test part, then the
validation part), taking ``round(n * fraction)`` images of a class of ``n`` into each part. This keeps
every class's share of every part within one image of the requested fraction, which the global
``stratify=`` two-stage split does not guarantee (it drifts by up to two images per class on small
classes). One ``numpy.random.RandomState(seed)`` drives all classes in sorted order, so the same files and
seed always give the same, byte-identical manifest.

The manifest is a CSV (``path,class,split,sha256,width,height,mode``; paths relative to the data folder, sorted)
with a JSON sidecar of the same name holding the seed, fractions, class list, counts, what was left out
and why, and the CSV's SHA-256.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from resnet_cli import __version__
from resnet_cli.config import SplitConfig, resolve_workers
from resnet_cli.data.scan import ImageFile, ProgressFn, find_part_folders, scan_folder, verify_files
from resnet_cli.errors import DatasetError, SplitError
from resnet_cli.fs import atomic_open, refuse_overwrite

MANIFEST_NAME = "manifest.csv"
PARTS = ("train", "val", "test")
COLUMNS = ("path", "class", "split", "sha256", "width", "height", "mode")
FORMAT = "resnet-cli split manifest"
_LIST_LIMIT = 20  # files named in one error line before "and N more"


@dataclass(frozen=True)
class ManifestRow:
    path: str  # relative to the data folder, forward slashes
    label: str
    part: str  # train, val or test
    sha256: str
    width: int
    height: int
    mode: str  # the file's own Pillow mode ("L", "RGB", "RGBA", "I;16", ...)


@dataclass
class Manifest:
    """A split manifest as read back from disk."""

    path: Path  # the CSV
    root: Path  # the data folder the rows' paths are relative to
    rows: list[ManifestRow]
    classes: list[str]
    seed: int
    val: float
    test: float
    csv_sha256: str
    meta: dict = field(default_factory=dict)  # the whole sidecar

    def part(self, name: str) -> list[ManifestRow]:
        return [r for r in self.rows if r.part == name]

    def counts(self) -> dict[str, dict[str, int]]:
        """``{class: {part: images}}`` for every class and part."""
        table = {c: dict.fromkeys(PARTS, 0) for c in self.classes}
        for r in self.rows:
            table[r.label][r.part] += 1
        return table


@dataclass
class SplitResult:
    manifest: Manifest
    sidecar: Path
    excluded: list[tuple[str, str]]  # (path, reason) of files left out
    dropped_classes: dict[str, int]  # class -> images, left out as too small
    warnings: list[str]

    def to_dict(self) -> dict:
        counts = self.manifest.counts()
        totals = {p: sum(c[p] for c in counts.values()) for p in PARTS}
        sizes = [sum(c.values()) for c in counts.values()]
        return {
            "manifest": str(self.manifest.path),
            "source": self.manifest.meta.get("source", "split"),
            "sidecar": str(self.sidecar),
            "root": str(self.manifest.root),
            "seed": self.manifest.seed,
            "val": self.manifest.val,
            "test": self.manifest.test,
            "classes": self.manifest.classes,
            "counts": counts,
            "totals": totals,
            "imbalance": round(max(sizes) / min(sizes), 3) if sizes else None,
            "excluded": [{"path": p, "reason": r} for p, r in self.excluded],
            "dropped_classes": self.dropped_classes,
            "warnings": self.warnings,
        }


def default_manifest_path(root: str | os.PathLike[str]) -> Path:
    return Path(root) / MANIFEST_NAME


def sidecar_path(manifest: Path) -> Path:
    return manifest.with_suffix(".json")


def check_fractions(val: float, test: float) -> None:
    """Raises SplitError unless 0 < val, 0 <= test and val + test < 1."""
    for name, value in (("--val", val), ("--test", test)):
        if not math.isfinite(value) or value < 0 or value >= 1:
            raise SplitError(f"{name} must be a fraction between 0 and 1, got {value}")
    if val <= 0:
        raise SplitError("--val must be greater than 0: validation drives early stopping and the learning rate")
    if val + test >= 1:
        raise SplitError(f"--val {val} plus --test {test} leaves nothing to train on: make them sum to less than 1")


def part_sizes(n: int, val: float, test: float) -> dict[str, int]:
    """Images of a class of ``n`` that go to each part (round half up, test first)."""
    n_test = math.floor(n * test + 0.5 + 1e-9) if test > 0 else 0
    n_val = math.floor(n * val + 0.5 + 1e-9)
    return {"train": n - n_test - n_val, "val": n_val, "test": n_test}


def every_part_filled(n: int, val: float, test: float) -> bool:
    """Whether a class of ``n`` images gets at least one in every requested part (rounding is not monotonic in
    ``n``, so a larger class can fail where a smaller one passes)."""
    sizes = part_sizes(n, val, test)
    return sizes["train"] >= 1 and sizes["val"] >= 1 and (test == 0 or sizes["test"] >= 1)


def min_class_size(val: float, test: float) -> int:
    """Fewest images a class needs for at least one in every requested part."""
    for n in range(1, 100_000):
        if every_part_filled(n, val, test):
            return n
    raise SplitError(f"fractions --val {val} --test {test} cannot give every part an image")  # pragma: no cover


def make_split(
    root: str | os.PathLike[str],
    config: SplitConfig,
    progress: ProgressFn | None = None,
    *,
    max_pixels: int | None = None,
    from_folders: bool = False,
) -> SplitResult:
    """Scan, verify, stratify (or adopt an existing split) and write the manifest; returns what was written.

    Args:
        root: the data folder, ``ROOT/<class>/<image>``; with ``from_folders``, ``ROOT/<part>/<class>/<image>``.
        config: fractions, seed and policies (``val`` and ``test`` are unused with ``from_folders``).
        progress: called as ``progress(done, total)`` while verifying.
        max_pixels: images with more pixels are unreadable (default: Pillow's limit, about 89.5 million).
        from_folders: keep the split the ``train``/``val`` (``valid``, ``validation``)/``test`` folders of a
            pre-split dataset already make; manifest paths stay relative to ``root`` (``train/cat/1.png``).

    Raises:
        DatasetError: the folder is unusable or holds unreadable images (without ``skip_bad``); a pre-split
            layout without ``from_folders`` (or ``from_folders`` without one); parts with different classes.
        SplitError: bad fractions or classes too small to split (without ``drop_small``).
        OutputExistsError: a manifest exists and ``force`` is false.
    """
    root = Path(root)
    part_folders = find_part_folders(root) if root.is_dir() else None
    if from_folders:
        _check_part_folders(root, part_folders)
    else:
        check_fractions(config.val, config.test)
        if part_folders:
            listed = ", ".join(f"{name}/" for name in part_folders.values())
            raise DatasetError(
                f"{root} is already split into {listed} each holding class folders: pass --from-folders to "
                "keep that split (without it the parts would become classes); to split afresh, put the class "
                "folders of every part into one folder"
            )
    manifest_path = Path(config.out) if config.out else default_manifest_path(root)
    if manifest_path.suffix.lower() != ".csv":
        raise SplitError(f"manifest path {manifest_path} must end in .csv (its JSON sidecar goes beside it)")
    refuse_overwrite(manifest_path, config.force, "manifest")
    refuse_overwrite(sidecar_path(manifest_path), config.force, "manifest sidecar")

    found = _scan_parts(root, part_folders) if from_folders and part_folders else _scan_one(root)
    workers = resolve_workers(config.workers, "image verification")
    checked = verify_files(root, found.files, workers=workers, progress=progress, max_pixels=max_pixels)
    bad = [(v.path, v.error) for v in checked if v.error]
    bad += [(name, "name not valid UTF-8, which the manifest cannot hold: rename it") for name in found.bad_names]
    if bad and not config.skip_bad:
        shown = "; ".join(f"{p} ({r})" for p, r in bad[:_LIST_LIMIT])
        more = f"; and {len(bad) - _LIST_LIMIT} more" if len(bad) > _LIST_LIMIT else ""
        raise DatasetError(
            f"{len(bad)} unreadable image{'s' if len(bad) > 1 else ''} in {root}: {shown}{more}: "
            "fix or remove them, or pass --skip-bad to leave them out (recorded in the manifest)"
        )
    good = [v for v in checked if not v.error]
    excluded: list[tuple[str, str]] = [(p, f"unreadable: {r}") for p, r in bad]
    warnings: list[str] = []
    if found.aliases:
        warnings.append(
            f"{len(found.aliases)} file(s) reached through more than one path were counted once, "
            f"e.g. {found.aliases[0][0]} is {found.aliases[0][1]}"
        )
    if found.skipped:
        shown = "; ".join(f"{p} ({r})" for p, r in found.skipped[:_LIST_LIMIT])
        more = f"; and {len(found.skipped) - _LIST_LIMIT} more" if len(found.skipped) > _LIST_LIMIT else ""
        warnings.append(f"{len(found.skipped)} link(s) not followed: {shown}{more}")

    groups: dict[str, list] = defaultdict(list)
    for v in good:
        groups[v.sha256].append(v)
    duplicate_groups = [g for g in groups.values() if len(g) > 1]
    if from_folders:
        # Keep the copy in the evaluation part: a leak is fixed by taking the image out of training.
        rank = {"test": 0, "val": 1, "train": 2}
        for g in duplicate_groups:
            g.sort(key=lambda v: (rank[found.part_of[v.path]], v.path))
    if config.dedupe:
        dropped = {id(v) for g in duplicate_groups for v in g[1:]}
        excluded += [(v.path, f"duplicate of {g[0].path}") for g in duplicate_groups for v in g[1:]]
        good = [v for v in good if id(v) not in dropped]
    conflicts = [g for g in duplicate_groups if len({v.label for v in g}) > 1]
    if conflicts:
        g = conflicts[0]
        warnings.append(
            f"{len(conflicts)} group(s) of identical files carry different classes, "
            f"e.g. {' = '.join(v.path for v in g[:2])}: check their labels"
        )

    if from_folders:
        rows, dropped_classes = _adopt(root, good, found, config)
        part_names = list(found.part_folders)
        n = max(len(rows), 1)
        val = round(sum(r.part == "val" for r in rows) / n, 6)
        test = round(sum(r.part == "test" for r in rows) / n, 6)
    else:
        rows, dropped_classes = _stratify(root, good, found, config)
        part_names = ["train", "val"] + (["test"] if config.test > 0 else [])
        val, test = config.val, config.test
    classes = sorted({r.label for r in rows})
    if dropped_classes:
        why = "without images in every part" if from_folders else "too small to split"
        warnings.append(f"left out {len(dropped_classes)} class(es) {why}: {_counts_text(dropped_classes)}")

    if duplicate_groups and not config.dedupe:
        part_of = {r.path: r.part for r in rows}
        leaking = [g for g in duplicate_groups if len({part_of.get(v.path) for v in g} - {None}) > 1]
        if leaking:
            g = [v for v in leaking[0] if v.path in part_of]
            example = " = ".join(f"{v.path} ({part_of[v.path]})" for v in g[:2])
            warnings.append(
                f"{len(leaking)} group(s) of byte-identical images are in more than one of {'/'.join(part_names)} "
                f"and leak between them, e.g. {example}, SHA-256 {g[0].sha256[:16]}...: pass --dedupe to keep "
                + ("only the copy in the evaluation part" if from_folders else "one of each")
            )

    text = _csv_text(rows)
    csv_sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    counts = {c: dict.fromkeys(PARTS, 0) for c in classes}
    for r in rows:
        counts[r.label][r.part] += 1
    meta = {
        "format": FORMAT,
        "version": 1,
        "created_by": f"resnet-cli {__version__}",
        "csv": manifest_path.name,
        "csv_sha256": csv_sha,
        "root": _relative_root(root, manifest_path),
        "source": "folders" if from_folders else "split",
        "seed": config.seed,
        "val": val,
        "test": test,
        "classes": classes,
        "counts": counts,
        "excluded": [{"path": p, "reason": r} for p, r in sorted(excluded)],
        "skipped_links": [{"path": p, "reason": r} for p, r in found.skipped],
        "dropped_classes": dropped_classes,
        "duplicate_groups": [[v.path for v in g] for g in duplicate_groups] if not config.dedupe else [],
        "max_pixels": max_pixels,
    }
    if from_folders:
        meta["part_folders"] = found.part_folders
    sidecar = sidecar_path(manifest_path)
    # Both files are written in full before either is renamed into place, the CSV first; a reader that
    # finds a new CSV beside an old sidecar sees the hash mismatch and says to split again.
    with (
        atomic_open(sidecar, "w", encoding="utf-8") as side,
        atomic_open(manifest_path, "w", encoding="utf-8") as rows_out,
    ):
        rows_out.write(text)
        side.write(json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    manifest = Manifest(
        path=manifest_path,
        root=root,
        rows=rows,
        classes=classes,
        seed=config.seed,
        val=val,
        test=test,
        csv_sha256=csv_sha,
        meta=meta,
    )
    return SplitResult(manifest, sidecar, sorted(excluded), dropped_classes, warnings)


@dataclass
class _Found:
    """What the scan of a data folder (or of each of its parts) found, paths relative to the data folder."""

    classes: list[str]
    files: list[ImageFile]
    other_files: dict[str, list[str]]
    aliases: list[tuple[str, str]]
    skipped: list[tuple[str, str]]
    bad_names: list[str]
    part_of: dict[str, str] = field(default_factory=dict)  # path -> part, for a pre-split dataset
    part_folders: dict[str, str] = field(default_factory=dict)  # part -> folder name
    part_classes: dict[str, list[str]] = field(default_factory=dict)


def _scan_one(root: Path) -> _Found:
    scan = scan_folder(root)
    return _Found(scan.classes, scan.files, scan.other_files, scan.aliases, scan.skipped, scan.bad_names)


def _check_part_folders(root: Path, part_folders: dict[str, str] | None) -> None:
    if not part_folders:
        raise DatasetError(
            f"--from-folders needs {root}/train/<class>/<image> and {root}/val/<class>/<image> "
            "(val may be named valid or validation; test/ is optional): drop --from-folders to split "
            f"{root}/<class>/<image> afresh"
        )
    if "val" not in part_folders:
        raise DatasetError(
            f"{root} has {', '.join(f'{n}/' for n in part_folders.values())} but no val/ (or valid/, validation/) "
            "folder: validation drives early stopping, so add one, or move the class folders of train/ up into "
            f"{root} and split afresh with --val"
        )


def _scan_parts(root: Path, part_folders: dict[str, str]) -> _Found:
    """Scan ``root/<part>/`` for each part; links may not leave their class folder inside ``root``."""
    found = _Found([], [], {}, [], [], [], part_folders=dict(part_folders))
    for part in PARTS:
        folder = part_folders.get(part)
        if folder is None:
            continue
        scan = scan_folder(root / folder, fence=root)
        found.part_classes[part] = scan.classes
        found.files += [ImageFile(f"{folder}/{f.path}", f.label) for f in scan.files]
        found.part_of.update({f"{folder}/{f.path}": part for f in scan.files})
        for label, names in scan.other_files.items():
            found.other_files.setdefault(label, []).extend(f"{folder}/{n}" for n in names)
        found.aliases += [(f"{folder}/{a}", f"{folder}/{b}") for a, b in scan.aliases]
        found.skipped += [(f"{folder}/{p}", r) for p, r in scan.skipped]
        found.bad_names += [f"{folder}/{n}" for n in scan.bad_names]
    train_classes = set(found.part_classes["train"])
    for part, classes in found.part_classes.items():
        missing, extra = sorted(train_classes - set(classes)), sorted(set(classes) - train_classes)
        if missing or extra:
            folder, train = str(root / part_folders[part]), str(root / part_folders["train"])
            what = "; ".join(
                text
                for text in (
                    f"{folder} lacks {', '.join(map(repr, missing))}" if missing else "",
                    f"{folder} has {', '.join(map(repr, extra))}, which {train} lacks" if extra else "",
                )
                if text
            )
            raise DatasetError(
                f"the parts of {root} have different classes: {what}: every part needs the same class folders"
            )
    found.classes = sorted(train_classes)
    found.files.sort(key=lambda f: f.path)
    return found


def _adopt(root: Path, good: list, found: _Found, config: SplitConfig) -> tuple[list[ManifestRow], dict[str, int]]:
    """Rows keeping each image in the part its folder names; and ``{class left out: images}``.

    Raises:
        SplitError: a class has no image in some part (without ``drop_small``), or fewer than two classes remain.
    """
    rows = [ManifestRow(v.path, v.label, found.part_of[v.path], v.sha256, v.width, v.height, v.mode) for v in good]
    present = {(r.label, r.part) for r in rows}
    empty = {c: [p for p in found.part_folders if (c, p) not in present] for c in found.classes}
    empty = {c: parts for c, parts in empty.items() if parts}
    if empty and not config.drop_small:
        described = ", ".join(f"{c!r} (none in {' or '.join(parts)})" for c, parts in sorted(empty.items()))
        raise SplitError(
            f"classes without images in every part of {root}: {described}: add images to those parts, "
            "or pass --drop-small to leave such classes out"
        )
    rows = sorted((r for r in rows if r.label not in empty), key=lambda r: r.path)
    if len({r.label for r in rows}) < 2:
        raise SplitError(f"fewer than two classes are left in {root}: classification needs at least two")
    return rows, {c: sum(1 for v in good if v.label == c) for c in sorted(empty)}


def _stratify(root: Path, good: list, found: _Found, config: SplitConfig) -> tuple[list[ManifestRow], dict[str, int]]:
    """Rows of the seeded, stratified split; and ``{class left out as too small: images}``.

    Raises:
        SplitError: classes too small for the fractions (without ``drop_small``), or fewer than two remain.
    """
    per_class: dict[str, list] = {c: [] for c in found.classes}
    for v in good:
        per_class[v.label].append(v)
    need = min_class_size(config.val, config.test)
    small = {
        c: len(items) for c, items in per_class.items() if not every_part_filled(len(items), config.val, config.test)
    }
    if small and not config.drop_small:
        raise SplitError(_too_small_message(small, need, config, found.other_files))
    for c in small:
        del per_class[c]
    if not per_class:
        raise SplitError(f"no class of {root} has the {need} images a split with these fractions needs")
    if len(per_class) < 2:
        only = next(iter(per_class))
        raise SplitError(f"only one class ({only}) is left in {root}: classification needs at least two")
    return _assign(per_class, config), dict(sorted(small.items()))


def _assign(per_class: dict[str, list], config: SplitConfig) -> list[ManifestRow]:
    import numpy as np
    from sklearn.model_selection import train_test_split

    rng = np.random.RandomState(config.seed)
    rows: list[ManifestRow] = []
    for label in sorted(per_class):
        items = sorted(per_class[label], key=lambda v: v.path)
        sizes = part_sizes(len(items), config.val, config.test)
        rest = items
        assigned: dict[str, list] = {}
        for part in ("test", "val"):
            if sizes[part] == 0:
                assigned[part] = []
                continue
            rest, taken = train_test_split(rest, test_size=sizes[part], random_state=rng, shuffle=True)
            assigned[part] = taken
        assigned["train"] = rest
        for part, chosen in assigned.items():
            rows += [ManifestRow(v.path, label, part, v.sha256, v.width, v.height, v.mode) for v in chosen]
    rows.sort(key=lambda r: r.path)
    return rows


def _csv_text(rows: list[ManifestRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow((r.path, r.label, r.part, r.sha256, r.width, r.height, r.mode))
    return buffer.getvalue()


def _relative_root(root: Path, manifest_path: Path) -> str:
    try:
        return Path(os.path.relpath(root.resolve(), manifest_path.resolve().parent)).as_posix()
    except ValueError:  # another drive on Windows
        return str(root.resolve())


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{c!r} ({n})" for c, n in sorted(counts.items()))


def _too_small_message(small: dict[str, int], need: int, config: SplitConfig, other: dict[str, list[str]]) -> str:
    parts = "train, val and test" if config.test > 0 else "train and val"
    described = []
    for c, n in sorted(small.items()):
        if n == 0 and other.get(c):
            described.append(f"{c!r} (no images; {len(other[c])} other file(s) such as {other[c][0]})")
        elif n == 0:
            described.append(f"{c!r} (empty)")
        elif n >= need:
            sizes = part_sizes(n, config.val, config.test)
            empty = [p for p in PARTS if sizes[p] == 0 and (p != "test" or config.test > 0)]
            described.append(f"{c!r} ({n} images leave {' and '.join(empty)} empty)")
        else:
            described.append(f"{c!r} ({n} image{'s' if n > 1 else ''})")
    fractions = f"--val {config.val}" + (f" --test {config.test}" if config.test > 0 else "")
    return (
        f"too few images to stratify: {', '.join(described)}; with {fractions} every class needs at least "
        f"{need} images to have one in each of {parts}: add images, lower the fractions, "
        "or pass --drop-small to leave such classes out"
    )


def _stays_inside(path: str) -> bool:
    """Whether a manifest path names a file inside the data folder: relative, no ``..``, no drive."""
    posix = path.replace("\\", "/")
    if not path or posix.startswith("/") or PureWindowsPath(path).drive or "\0" in path:
        return False
    return ".." not in PurePosixPath(posix).parts


def read_manifest(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Manifest:
    """Read a manifest CSV and its sidecar, checking that they belong together.

    Args:
        path: the CSV.
        root: the data folder, when it is not where the sidecar says (a moved or copied dataset).

    Raises:
        DatasetError: missing, malformed or inconsistent files.
    """
    path = Path(path)
    if path.is_dir():
        path = default_manifest_path(path)
    if not path.is_file():
        if not path.suffix and path.name in PARTS:
            raise DatasetError(
                f"'{path}' is a part name, not a manifest file: pass --manifest FILE, or --data DIR for the "
                "data folder that holds manifest.csv"
            )
        missing = path if not path.suffix else path.parent  # a name without .csv meant a folder
        if not missing.exists():
            raise DatasetError(f"folder {missing} does not exist: pass the data folder that holds manifest.csv")
        if default_manifest_path(path.parent.parent).is_file() and path.parent.parent != path.parent:
            above = path.parent.parent
            raise DatasetError(
                f"no split manifest at {path}, but {above} has one ({path.parent.name} is one of its class folders?): "
                f"pass --data {above}"
            )
        folder = "DATA_DIR" if str(path.parent) == "." else str(path.parent)
        raise DatasetError(f"no split manifest at {path}: run 'resnet split {folder} --val 0.2' first")
    side = sidecar_path(path)
    try:
        raw = path.read_bytes()
        meta = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"manifest sidecar {side} is missing: run 'resnet split' again") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read manifest {path} or {side}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DatasetError(f"{side} is not a resnet-cli manifest sidecar: run 'resnet split' again")
    csv_sha = hashlib.sha256(raw).hexdigest()
    if meta.get("csv_sha256") != csv_sha:
        raise DatasetError(
            f"{path} was changed after it was written (its hash differs from {side}): run 'resnet split' again"
        )
    reader = csv.reader(io.StringIO(raw.decode("utf-8")))
    header = next(reader, None)
    if header is None or tuple(header) != COLUMNS:
        raise DatasetError(f"{path} has columns {header}, expected {','.join(COLUMNS)}")
    rows = []
    for line, fields in enumerate(reader, start=2):
        try:
            p, label, part, sha, w, h, mode = fields
            rows.append(ManifestRow(p, label, part, sha, int(w), int(h), mode))
        except ValueError:
            raise DatasetError(f"{path}, line {line}: malformed row {fields}") from None
        if not _stays_inside(p):
            # Checked even when the hash matches: editing the sidecar's hash too is as easy as editing the CSV.
            raise DatasetError(
                f"{path}, line {line}: path {p!r} leads outside the data folder (absolute, or with '..'): "
                "manifest paths are relative to the data folder; run 'resnet split' again"
            )
    classes = list(meta["classes"])
    bad = Counter(r.part for r in rows if r.part not in PARTS) + Counter(
        r.label for r in rows if r.label not in classes
    )
    if bad:
        raise DatasetError(f"{path} has rows with unknown parts or classes: {dict(bad)}")
    data_root = Path(root) if root is not None else Path(os.path.normpath(path.parent / meta.get("root", ".")))
    return Manifest(
        path=path,
        root=data_root,
        rows=rows,
        classes=classes,
        seed=int(meta["seed"]),
        val=float(meta["val"]),
        test=float(meta["test"]),
        csv_sha256=csv_sha,
        meta=meta,
    )

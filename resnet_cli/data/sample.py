"""``resnet sample-data``: real image datasets as ImageFolders of PNGs, from files already on this machine.

Digits (:func:`write_digits`): scikit-learn's 1,797 real 8x8 scans with 17 grey levels (0-16), 10 classes;
shipped inside scikit-learn, so nothing is downloaded. Level ``v`` becomes the 8-bit grey ``round(v * 255 / 16)``.
File names are ``<class>/<class>_<index>.png`` with the sample's index in scikit-learn's order, so they never change.

Fashion-MNIST (:func:`write_fashion_mnist`): Zalando's 70,000 28x28 greyscale photos of clothing, 10 classes
(MIT licence), read from the four standard IDX files (raw or gzipped) that Debian's ``dataset-fashion-mnist``
package installs, or from any folder holding them. The official 10,000 test images become the test part, a
seeded stratified share of the official training images the validation part, written as
``<part>/<class>/<train|test>_<index>.png`` (index: position in its IDX file) with the split manifest beside them.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_cli.errors import ConfigError, DatasetError, OutputExistsError, SplitError
from resnet_cli.fs import atomic_write_bytes

if TYPE_CHECKING:
    import numpy as np

    from resnet_cli.data.scan import ProgressFn

#: Where Debian's and Ubuntu's ``dataset-fashion-mnist`` package installs the four IDX files (gzipped);
#: ``dpkg -L dataset-fashion-mnist`` lists them.
FASHION_MNIST_SOURCE = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
#: The official label names (0..9), made safe as folder names ("T-shirt/top" -> "T-shirt_top").
FASHION_MNIST_CLASSES = (
    "T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot",
)  # fmt: skip
FASHION_MNIST_HOWTO = (
    "sudo apt-get install dataset-fashion-mnist (Debian/Ubuntu), or download the four files from "
    "https://github.com/zalandoresearch/fashion-mnist into a folder and pass --source DIR"
)
_OWN_NAME = re.compile(r"(train|test)_[0-9]+\.png")  # the names write_fashion_mnist gives its images


@dataclass(frozen=True)
class SampleDataResult:
    dest: Path
    images: int
    classes: list[str]
    per_class: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"dest": str(self.dest), "images": self.images, "classes": self.classes, "per_class": self.per_class}


def write_digits(dest: str | os.PathLike[str], force: bool = False, per_class: int | None = None) -> SampleDataResult:
    """Write the digits under ``dest``.

    Args:
        dest: folder to create (or, with ``force``, to write into).
        force: write into a non-empty folder, replacing files of the same names; nothing else is removed.
        per_class: keep only the first N images of each class (small fixtures for tests and smoke runs).

    Raises:
        OutputExistsError: ``dest`` is not empty and ``force`` is false.
        ConfigError: ``dest`` is a file, or ``per_class`` is not positive.
    """
    import numpy as np
    from sklearn.datasets import load_digits

    dest = Path(dest)
    _check_dest(dest, force)
    _check_per_class(per_class)

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    counts: dict[str, int] = {}
    for index, (image, target) in enumerate(zip(pixels, digits.target, strict=True)):
        label = str(int(target))
        if per_class is not None and counts.get(label, 0) >= per_class:
            continue
        atomic_write_bytes(dest / label / f"{label}_{index:04d}.png", _png(image))
        counts[label] = counts.get(label, 0) + 1
    classes = sorted(counts, key=int)
    return SampleDataResult(dest, sum(counts.values()), classes, {c: counts[c] for c in classes})


@dataclass(frozen=True)
class FashionMnistResult:
    dest: Path
    source: Path
    manifest: Path
    images: int
    classes: list[str]
    counts: dict[str, dict[str, int]]  # class -> part -> images
    warnings: list[str] = field(default_factory=list)  # from the split (e.g. byte-identical images in two parts)

    def totals(self) -> dict[str, int]:
        return {part: sum(c[part] for c in self.counts.values()) for part in ("train", "val", "test")}

    def to_dict(self) -> dict[str, Any]:
        return {
            "dest": str(self.dest),
            "dataset": "fashion-mnist",
            "source": str(self.source),
            "manifest": str(self.manifest),
            "images": self.images,
            "classes": self.classes,
            "counts": self.counts,
            "totals": self.totals(),
            "warnings": self.warnings,
        }


def find_fashion_mnist(source: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """The four IDX files in ``source`` (default :data:`FASHION_MNIST_SOURCE`), each raw or with ``.gz``.

    Raises:
        DatasetError: a file is missing, naming the folder and how to get the files.
    """
    folder = Path(source) if source is not None else FASHION_MNIST_SOURCE
    found: dict[str, Path] = {}
    missing: list[str] = []
    for key, name in FASHION_MNIST_FILES.items():
        path = next((p for p in (folder / name, folder / f"{name}.gz") if p.exists()), None)
        if path is None:
            missing.append(name)
        else:
            found[key] = path
    if len(missing) == len(FASHION_MNIST_FILES):
        raise DatasetError(f"no Fashion-MNIST files in {folder}: {FASHION_MNIST_HOWTO}")
    if missing:
        raise DatasetError(
            f"{folder} lacks {', '.join(f'{n}[.gz]' for n in missing)} of Fashion-MNIST's four files: "
            f"{FASHION_MNIST_HOWTO}"
        )
    return found


def write_fashion_mnist(
    dest: str | os.PathLike[str],
    source: str | os.PathLike[str] | None = None,
    *,
    val: float = 0.1,
    seed: int = 42,
    per_class: int | None = None,
    force: bool = False,
    workers: int | None = None,
    progress: ProgressFn | None = None,
) -> FashionMnistResult:
    """Import Fashion-MNIST under ``dest`` as ``<part>/<class>/<file>.png`` with a split manifest, ready to train.

    The official test images form the test part; ``val`` of each class's official training images (rounded as
    ``resnet split`` rounds, chosen with scikit-learn's ``train_test_split`` and one ``RandomState(seed)`` over
    the classes in sorted order, as ``resnet split`` does) form the validation part; the rest is train. All four
    files are read and checked before anything is written. The manifest (``dest/manifest.csv`` and its JSON
    sidecar) is written by :func:`resnet_cli.data.split.make_split` adopting the part folders.

    Args:
        dest: folder to create (or, with ``force``, to write into).
        source: folder holding the four IDX files (default :data:`FASHION_MNIST_SOURCE`).
        val: fraction of each class's training images for validation.
        seed: seed of the validation draw.
        per_class: keep only the first N images of each class from each of the train and test files.
        force: write into a non-empty folder, replacing the manifest and files of the same names; images this
            function wrote before that the new split puts elsewhere are removed, nothing else is.
        workers: processes verifying the written images (see :func:`resnet_cli.config.resolve_workers`).
        progress: called as ``progress(done, total)`` while writing the images, then while the split verifies
            them (``total`` counts both passes).

    Raises:
        DatasetError: missing or malformed source files (each named), or train and test files that disagree.
        SplitError: a bad ``val``, or classes too small for it (with ``per_class``).
        ConfigError: ``dest`` is a file, or ``per_class`` is not positive.
        OutputExistsError: ``dest`` is not empty and ``force`` is false.
    """
    from resnet_cli.config import SplitConfig
    from resnet_cli.data.idx import read_idx_pair
    from resnet_cli.data.split import check_fractions, make_split

    dest = Path(dest)
    check_fractions(val, 0.0)
    _check_per_class(per_class)
    files = find_fashion_mnist(source)
    classes = len(FASHION_MNIST_CLASSES)
    train_x, train_y = read_idx_pair(files["train_images"], files["train_labels"], classes)
    test_x, test_y = read_idx_pair(files["test_images"], files["test_labels"], classes)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DatasetError(
            f"{files['train_images']} holds {train_x.shape[1]}x{train_x.shape[2]} images but {files['test_images']} "
            f"holds {test_x.shape[1]}x{test_x.shape[2]}: use files of one dataset"
        )
    train = _first_per_class(train_y, per_class)
    test = _first_per_class(test_y, per_class)
    if set(train) != set(test):
        only = sorted(set(train) ^ set(test))
        names = ", ".join(FASHION_MNIST_CLASSES[c] for c in only)
        raise DatasetError(
            f"{files['train_labels']} and {files['test_labels']} do not hold the same classes ({names} in only one): "
            "use files of one dataset"
        )
    if len(train) < 2:
        raise DatasetError(f"{files['train_labels']} holds fewer than two classes: classification needs at least two")
    _check_dest(dest, force)

    plan = _plan(train, test, val, seed, files["train_labels"])
    n = len(plan)
    if force:
        _remove_stale(dest, {path for path, _, _ in plan})
    for done, (path, split_name, index) in enumerate(plan, start=1):
        pixels = train_x[index] if split_name == "train" else test_x[index]
        atomic_write_bytes(dest / path, _png(pixels))
        if progress is not None:
            progress(done, 2 * n)

    def verified(done: int, total: int) -> None:
        if progress is not None:
            progress(n + done, n + total)

    config = SplitConfig(val=val, test=0.0, seed=seed, force=True, workers=workers)
    split = make_split(dest, config, progress=verified, from_folders=True)
    counts = split.manifest.counts()
    return FashionMnistResult(
        dest=dest,
        source=files["train_images"].parent,
        manifest=split.manifest.path,
        images=len(split.manifest.rows),
        classes=split.manifest.classes,
        counts=counts,
        warnings=list(split.warnings),
    )


def _check_dest(dest: Path, force: bool) -> None:
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{dest} is a file: give a folder to write the images into")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise OutputExistsError(f"{dest} is not empty: pass --force to write into it, or choose a new folder")


def _check_per_class(per_class: int | None) -> None:
    if per_class is not None and per_class < 1:
        raise ConfigError(f"--per-class must be at least 1, got {per_class}")


def _first_per_class(labels: np.ndarray, per_class: int | None) -> dict[int, list[int]]:
    """``{label: positions}``, in file order, the first ``per_class`` of each label when given."""
    import numpy as np

    chosen: dict[int, list[int]] = {}
    for label in np.unique(labels).tolist():
        positions = np.flatnonzero(labels == label)
        chosen[int(label)] = positions[:per_class].tolist() if per_class is not None else positions.tolist()
    return chosen


def _plan(
    train: dict[int, list[int]], test: dict[int, list[int]], val: float, seed: int, labels_file: Path
) -> list[tuple[str, str, int]]:
    """``(path under dest, "train" or "test" file, position)`` for every image, sorted by path.

    Raises:
        SplitError: a class has too few training images to give both train and val one.
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    from resnet_cli.data.split import every_part_filled, min_class_size, part_sizes

    small = {FASHION_MNIST_CLASSES[c]: len(p) for c, p in train.items() if not every_part_filled(len(p), val, 0.0)}
    if small:
        described = ", ".join(f"{name!r} ({n})" for name, n in sorted(small.items()))
        raise SplitError(
            f"too few training images in {labels_file} to carve out --val {val}: {described}; every class needs "
            f"at least {min_class_size(val, 0.0)}: raise --per-class or --val"
        )
    width = max(5, len(str(max(max(p) for p in (*train.values(), *test.values())))))
    plan: list[tuple[str, str, int]] = []
    rng = np.random.RandomState(seed)
    by_name = {FASHION_MNIST_CLASSES[c]: c for c in train}
    # Classes in sorted name order and one RandomState through them, as resnet split's own stratification does.
    for name in sorted(by_name):
        positions = train[by_name[name]]
        n_val = part_sizes(len(positions), val, 0.0)["val"]
        rest, held = train_test_split(positions, test_size=n_val, random_state=rng, shuffle=True)
        for part, chosen in (("train", rest), ("val", held)):
            plan += [(f"{part}/{name}/train_{i:0{width}d}.png", "train", i) for i in chosen]
        plan += [(f"test/{name}/test_{i:0{width}d}.png", "test", i) for i in test[by_name[name]]]
    plan.sort()
    return plan


def _remove_stale(dest: Path, planned: set[str]) -> None:
    """Remove images an earlier import wrote under ``dest`` that the new plan does not write again (they would
    otherwise stay behind in the part they had, and leak between parts)."""
    for part in ("train", "val", "test"):
        for name in FASHION_MNIST_CLASSES:
            folder = dest / part / name
            if not folder.is_dir() or folder.is_symlink():
                continue
            for entry in os.scandir(folder):
                relative = f"{part}/{name}/{entry.name}"
                if _OWN_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False) and relative not in planned:
                    os.unlink(entry.path)


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()

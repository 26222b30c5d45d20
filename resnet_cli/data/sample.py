"""``resnet sample-data``: scikit-learn's bundled handwritten digits as an ImageFolder of PNGs.

1,797 real 8x8 scans with 17 grey levels (0-16), 10 classes; shipped inside scikit-learn, so nothing is
downloaded. Level ``v`` becomes the 8-bit grey ``round(v * 255 / 16)``. File names are
``<class>/<class>_<index>.png`` with the sample's index in scikit-learn's order, so they never change.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_cli.errors import ConfigError, OutputExistsError
from resnet_cli.fs import atomic_write_bytes


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
    from PIL import Image
    from sklearn.datasets import load_digits

    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{dest} is a file: give a folder to write the images into")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise OutputExistsError(f"{dest} is not empty: pass --force to write into it, or choose a new folder")
    if per_class is not None and per_class < 1:
        raise ConfigError(f"--per-class must be at least 1, got {per_class}")

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    counts: dict[str, int] = {}
    for index, (image, target) in enumerate(zip(pixels, digits.target, strict=True)):
        label = str(int(target))
        if per_class is not None and counts.get(label, 0) >= per_class:
            continue
        buffer = io.BytesIO()
        Image.fromarray(image, mode="L").save(buffer, format="PNG", optimize=False)
        atomic_write_bytes(dest / label / f"{label}_{index:04d}.png", buffer.getvalue())
        counts[label] = counts.get(label, 0) + 1
    classes = sorted(counts, key=int)
    return SampleDataResult(dest, sum(counts.values()), classes, {c: counts[c] for c in classes})

"""Real image files for tests: small, written to disk with Pillow."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def write_png(path: Path, value: int = 128, size: int = 12, mode: str = "L", seed: int | None = None) -> Path:
    """A small PNG; ``seed`` gives random pixels so files differ byte-wise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"L": 1, "RGB": 3}[mode]
    if seed is None:
        array = np.full((size, size, channels), value, np.uint8)
    else:
        array = np.random.default_rng(seed).integers(0, 256, (size, size, channels), dtype=np.uint8)
    Image.fromarray(array.squeeze(-1) if channels == 1 else array, mode).save(path)
    return path


def write_jpeg(path: Path, size: int = 32, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(array, "RGB").save(path, quality=90)
    return path


def make_folder(root: Path, per_class: dict[str, int], size: int = 12, mode: str = "L") -> Path:
    """An ImageFolder with distinct random images: ``{class: count}``."""
    seed = 0
    for label, count in per_class.items():
        for i in range(count):
            write_png(root / label / f"img_{i:03d}.png", size=size, mode=mode, seed=seed)
            seed += 1
    return root


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def png_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()

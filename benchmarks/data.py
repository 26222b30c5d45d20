"""Data loading speed: the project's loader against torchvision's ImageFolder, and the speed of ``make_split``.

Ours: ``ManifestDataset`` + ``EpochBatchSampler`` + ``make_loader`` with ``train_transform``/``eval_transform``.
Baseline: ``torchvision.datasets.ImageFolder`` over the same files with the same ``transforms.v2`` ops (applied
to the PIL image ImageFolder gives, ``ToImage`` inserted before ``ToDtype``) in a plain ``DataLoader`` with
persistent workers. Data, written here: the sample digits upscaled to 64 px greyscale PNGs (pad-and-crop), and
smooth 256 px RGB JPEGs (random resized crop to 224 / resize 256 + centre crop). One measurement is one pass;
the sides alternate for ``--rounds`` rounds after a warm-up pass each. Target: ours/ImageFolder >= 0.95 on
every row. Also timed, as a reference: ``make_split`` scanning, hashing and decoding small PNGs against a
single-process loop of read + SHA-256 + Pillow decode.

    python benchmarks/data.py [--workers 0 2] [--quick] [--json]
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import statistics
import tempfile
from pathlib import Path

import _common
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from resnet_cli.config import PreprocessConfig, SplitConfig
from resnet_cli.data.dataset import EpochBatchSampler, ManifestDataset, make_loader
from resnet_cli.data.preprocess import imagenet_stats
from resnet_cli.data.split import Manifest, make_split
from resnet_cli.data.transforms import eval_transform, train_transform

TARGET = 0.95


def pil(path: str, mode: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert(mode)


def loaders(manifest: Manifest, pre: PreprocessConfig, train: bool, workers: int, batch: int):
    """(ours, ImageFolder) passes over every image of ``manifest``, each returning images per second."""
    root = manifest.root
    transform = train_transform(pre) if train else eval_transform(pre)
    ours_set = ManifestDataset(root, manifest.rows, manifest.classes, transform, pre.in_channels)
    sampler = EpochBatchSampler(len(ours_set), batch, seed=0, shuffle=train, train=train)
    ours = make_loader(ours_set, sampler, workers, seed=0)
    ops = list(transform.transforms)
    at = next(i for i, op in enumerate(ops) if isinstance(op, v2.ToDtype))
    theirs_set = ImageFolder(str(root), v2.Compose([*ops[:at], v2.ToImage(), *ops[at:]]),
                             loader=functools.partial(pil, mode="L" if pre.in_channels == 1 else "RGB"))  # fmt: skip
    assert len(theirs_set) == len(ours_set)
    theirs = DataLoader(theirs_set, batch, shuffle=train, num_workers=workers, persistent_workers=workers > 0)

    epochs = itertools.count(1)

    def one_pass(loader) -> float:
        if loader is ours:
            sampler.set_epoch(next(epochs))  # a new seeded order, as fit's epochs
        return _common.timed(lambda: sum(len(y) for _, y in loader), torch.device("cpu"))

    return (lambda: one_pass(ours)), (lambda: one_pass(theirs))


def plain_verify(root: Path) -> int:
    """Read, SHA-256 and fully decode every file: the work ``make_split`` does per image, in one process."""
    files = sorted(root.glob("*/*.png"))
    for file in files:
        hashlib.sha256(file.read_bytes()).hexdigest()
        with Image.open(file) as image:
            image.load()
    return len(files)


def main(argv: list[str] | None = None) -> int:
    bench = _common.Bench(__doc__, rounds=3)
    bench.parser.add_argument("--workers", type=int, nargs="+", default=None, help="default 0 2 (quick 0)")
    bench.parser.add_argument("--batch-size", type=int, default=32)
    args = bench.parse(argv)
    workers = args.workers if args.workers is not None else [0] if args.quick else [0, 2]
    small, big = (16, 64) if args.quick else (64, 256)
    mean, std = imagenet_stats(1)
    with tempfile.TemporaryDirectory(prefix="resnet-bench-data-") as tmp:
        digits, jpegs, split = Path(tmp) / "digits", Path(tmp) / "jpegs", Path(tmp) / "split"
        n_digits = _common.write_digits_at(digits, small, per_class=3 if args.quick else None)
        n_jpegs = _common.write_noise(jpegs, 12 if args.quick else 300, big)
        datasets = [
            (f"{n_digits} digits, {small} px PNG", digits,
             PreprocessConfig(image_size=small, resize_size=small, in_channels=1, mean=mean, std=std, augment="crop")),
            (f"{n_jpegs} JPEGs, {big} px -> {big * 7 // 8}", jpegs,
             PreprocessConfig(image_size=big * 7 // 8, resize_size=big, in_channels=3, augment="rrc")),
        ]  # fmt: skip
        rows = []
        for name, root, pre in datasets:
            manifest = make_split(root, SplitConfig(val=0.2, seed=0)).manifest
            for train in (True, False):
                for w in workers:
                    ours, theirs = loaders(manifest, pre, train, w, args.batch_size)
                    ours(), theirs()  # warm-up: page cache, worker start
                    result = _common.interleave({"ours": ours, "ImageFolder": theirs}, args.rounds)
                    ratio, spread = _common.compare(result["ours"], result["ImageFolder"])
                    rows.append([name, "train" if train else "eval", w, statistics.median(result["ours"]),
                                 statistics.median(result["ImageFolder"]), f"{ratio:.3f}", spread])  # fmt: skip
        bench.table("loaders", ["images", "transform", "workers", "ours img/s", "ImageFolder img/s", "ratio", "spread"],
                    rows)  # fmt: skip
        bench.verdict(f"loader ours/ImageFolder (lowest of {len(rows)} rows)", min(float(r[5]) for r in rows), TARGET)

        count = _common.write_noise(split, 200 if args.quick else 10_000, 16, suffix=".png", classes=10)
        sides = {
            "make_split": lambda: _common.timed(
                lambda: len(make_split(split, SplitConfig(val=0.2, seed=0, force=True)).manifest.rows), args.device
            ),
            "plain loop": lambda: _common.timed(lambda: plain_verify(split), args.device),
        }
        result = _common.interleave(sides, args.rounds)
        ratio, spread = _common.compare(result["make_split"], result["plain loop"])
        seconds = count / statistics.median(result["make_split"])
        bench.results["split"] = {"images": count, "seconds": seconds, "vs_plain_loop": ratio}
        bench.say(f"make_split of {count:,} 16 px PNGs: {seconds:.2f} s; make_split/plain loop {ratio:.2f}x "
                  f"(a reference, no target; per-round ratios {spread})")  # fmt: skip
    return bench.finish()


if __name__ == "__main__":
    raise SystemExit(main())

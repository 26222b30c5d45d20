"""Data loading speed: the project's loader against torchvision's ImageFolder, and the speed of ``make_split``.

Ours: ``ManifestDataset`` + ``EpochBatchSampler`` + ``make_loader`` with ``train_transform``/``eval_transform``.
Baseline: ``torchvision.datasets.ImageFolder`` over the same files with the same ``transforms.v2`` ops (applied
to the PIL image ImageFolder gives, ``ToImage`` inserted before ``ToDtype``) in a plain ``DataLoader`` with
persistent workers. Data, written here: the sample digits upscaled to 64 px greyscale PNGs (pad-and-crop), and
smooth 256 px RGB JPEGs (random resized crop to 224 / resize 256 + centre crop). One measurement is one pass;
the sides alternate for ``--rounds`` rounds after a warm-up pass each. Target: ours/ImageFolder >= 0.95 on
every row. Also timed, as a reference: ``make_split`` scanning, hashing and decoding small PNGs against a
single-process loop of read + SHA-256 + Pillow decode.

``--cache-images``: the loader alone (train transform, pad-and-crop) in its second epoch, with the images held
decoded in RAM against decoding them again, as img/s cache/no-cache, on the sample digits (8 px PNGs) and on
28 px greyscale PNGs (a Fashion-MNIST subset, 200 per class, from ``/usr/share/datasets/fashion-mnist`` when
installed; synthetic 28 px images with ``--quick`` or without it). No target: the ratio says what the flag buys.

    python benchmarks/data.py [--workers 0 2] [--quick] [--json]
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import _common
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from resnet_cli.config import PreprocessConfig, SplitConfig
from resnet_cli.data.dataset import EpochBatchSampler, ImageCache, ManifestDataset, make_loader
from resnet_cli.data.preprocess import imagenet_stats
from resnet_cli.data.split import Manifest, make_split, read_manifest
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


def cache_passes(manifest: Manifest, pre: PreprocessConfig, workers: int, batch: int):
    """(cached, decoding) passes of the training loader over ``manifest``'s train part (epoch 2 onwards: epoch 1
    is the warm-up), each returning images per second; and the seconds the cache took to fill."""
    rows = manifest.part("train")
    start = time.perf_counter()
    cache = ImageCache(manifest.root, rows, pre.in_channels)
    fill = time.perf_counter() - start

    def one_side(cache: ImageCache | None):
        dataset = ManifestDataset(manifest.root, rows, manifest.classes, train_transform(pre), pre.in_channels,
                                  cache=cache)  # fmt: skip
        sampler = EpochBatchSampler(len(dataset), batch, seed=0, shuffle=True)
        loader = make_loader(dataset, sampler, workers, seed=0)
        epochs = itertools.count(1)

        def one_pass() -> float:
            sampler.set_epoch(next(epochs))
            return _common.timed(lambda: sum(len(y) for _, y in loader), torch.device("cpu"))

        one_pass()  # epoch 1: worker start, page cache
        return one_pass

    return one_side(cache), one_side(None), fill


def fashion_like(dest: Path, quick: bool) -> tuple[str, Path]:
    """28 px greyscale PNGs: the real Fashion-MNIST (200 per class) where installed, else synthetic."""
    if not quick:
        from resnet_cli.data.sample import write_fashion_mnist
        from resnet_cli.errors import DatasetError

        try:
            write_fashion_mnist(dest, per_class=200, workers=0)
            return "Fashion-MNIST, 28 px PNG", dest
        except DatasetError:
            pass
    _common.write_noise(dest, 100 if quick else 2000, 28, suffix=".png", classes=10)
    return "synthetic, 28 px PNG", dest


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

        rows = []
        digits8 = Path(tmp) / "digits8"
        _common.write_digits_at(digits8, 8, per_class=10 if args.quick else None)
        make_split(digits8, SplitConfig(val=0.2, seed=0))
        label, fashion = fashion_like(Path(tmp) / "fashion", args.quick)
        if not (fashion / "manifest.csv").exists():
            make_split(fashion, SplitConfig(val=0.2, seed=0))
        for name, root, side in (("digits, 8 px PNG", digits8, 8), (label, fashion, 28)):
            manifest = read_manifest(root / "manifest.csv")
            pre = PreprocessConfig(image_size=side, resize_size=side, in_channels=1, mean=mean, std=std, augment="crop")
            for w in workers:
                cached, decoding, fill = cache_passes(manifest, pre, w, args.batch_size)
                result = _common.interleave({"cache": cached, "decode": decoding}, args.rounds)
                ratio, spread = _common.compare(result["cache"], result["decode"])
                rows.append([name, len(manifest.part("train")), w, statistics.median(result["cache"]),
                             statistics.median(result["decode"]), f"{ratio:.2f}", spread, f"{fill:.2f}"])  # fmt: skip
        bench.table("cache_images", ["images", "train images", "workers", "cache img/s", "decode img/s",
                                     "cache/decode", "spread", "fill s"], rows)  # fmt: skip
        bench.say("--cache-images, epoch-2 loader img/s cache/decode: "
                  + "; ".join(f"{r[0]} (workers {r[2]}) {r[5]}x" for r in rows))  # fmt: skip

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

"""Data loading speed: the project's loader path against a plain ``torchvision.datasets.ImageFolder``.

Ours: ``ManifestDataset`` (decode with ``resnet_cli.data.images``, seeded per-sample augmentation) +
``EpochBatchSampler`` + ``make_loader`` with ``train_transform`` / ``eval_transform`` of a
``PreprocessConfig``. Baseline: ``ImageFolder`` over the same files, with the same ``transforms.v2`` ops
applied to the PIL images ImageFolder gives (geometry on PIL, then ``ToImage`` before ``ToDtype`` and
``Normalize``; ``--tensor-baseline`` converts first and runs every op on tensors, as ours does), in a plain
``DataLoader`` (shuffled for training, persistent workers like ours so worker start-up is not timed).

Two datasets, both real and written here: (a) the sample digits (``write_digits``) upscaled to 64 px greyscale
PNGs, one channel, pad-and-crop augmentation; (b) smooth 256 x 256 RGB JPEGs (upsampled noise), random
resized crop to 224 px / resize 256 + centre crop 224. Rows: dataset x train/eval transform x 0, 1, 2
workers. One measurement is one full pass (epoch) over the loader, in images per second; the sides alternate
for ``--rounds`` rounds after one warm-up pass each; medians and the ratio ours/ImageFolder are reported.
Target: ratio >= 0.95 on every row.

Also timed: ``resnet_cli.data.split.make_split`` scanning, hashing and verifying 10,000 small PNGs (16 px
digits in 10 classes; 1,000 with ``--quick``), against a single-process loop doing the same reads,
SHA-256 and Pillow decodes (a reference, not a target).

    python benchmarks/data.py            # CPU defaults (about two minutes on two cores)
    python benchmarks/data.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common
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


@dataclass
class DataSet:
    name: str
    root: Path
    pre: PreprocessConfig
    images: int
    manifest: Manifest | None = None

    def __post_init__(self) -> None:
        self.manifest = make_split(self.root, SplitConfig(val=0.2, seed=0)).manifest


def grey_loader(path: str) -> Image.Image:
    with open(path, "rb") as handle:
        image = Image.open(handle)
        return image.convert("L")


def baseline_compose(ours: v2.Compose, tensor_first: bool) -> v2.Compose:
    """The same op objects, applied to a PIL image: ``ToImage`` goes in before the first ``ToDtype`` (or first)."""
    ops = list(ours.transforms)
    at = 0 if tensor_first else next(i for i, op in enumerate(ops) if isinstance(op, v2.ToDtype))
    return v2.Compose([*ops[:at], v2.ToImage(), *ops[at:]])


def one_pass(loader, device: torch.device, set_epoch=None) -> float:
    """Images per second of one full pass over ``loader`` (batches copied to ``device``)."""
    if set_epoch is not None:
        set_epoch()
    seen = 0
    common.sync(device)
    start = time.perf_counter()
    for x, y in loader:
        if device.type == "cuda":
            x = x.to(device, non_blocking=True)
        seen += len(y)
    common.sync(device)
    return seen / (time.perf_counter() - start)


def compare_loaders(
    data: DataSet, kind: str, workers: int, batch: int, rounds: int, device: torch.device, tensor_first: bool
) -> tuple[list[float], list[float]]:
    manifest = data.manifest
    rows = manifest.rows  # every file of every part, as ImageFolder sees them
    train = kind == "train"
    transform = train_transform(data.pre) if train else eval_transform(data.pre)
    pin = device.type == "cuda"

    ours_set = ManifestDataset(manifest.root, rows, manifest.classes, transform, data.pre.in_channels)
    sampler = EpochBatchSampler(len(ours_set), batch, seed=0, shuffle=train, train=train)
    ours_loader = make_loader(ours_set, sampler, workers, seed=0, pin_memory=pin)
    epoch = [0]

    def next_epoch() -> None:
        epoch[0] += 1
        sampler.set_epoch(epoch[0])

    # ImageFolder's default loader converts to RGB; greyscale data gets the same one-channel decode as ours.
    extra = {"loader": grey_loader} if data.pre.in_channels == 1 else {}
    base_set = ImageFolder(str(data.root), transform=baseline_compose(transform, tensor_first), **extra)
    if len(base_set) != len(ours_set):
        raise SystemExit(f"ImageFolder sees {len(base_set)} images, the manifest {len(ours_set)}")
    base_loader = DataLoader(
        base_set,
        batch_size=batch,
        shuffle=train,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin,
        generator=torch.Generator().manual_seed(0),
    )
    one_pass(ours_loader, device, next_epoch)  # warm-up: starts the persistent workers, fills caches
    one_pass(base_loader, device)
    result = common.interleave(
        {
            "ours": lambda: one_pass(ours_loader, device, next_epoch),
            "ImageFolder": lambda: one_pass(base_loader, device),
        },
        rounds,
    )
    return result["ours"], result["ImageFolder"]


def write_small_pngs(dest: Path, count: int) -> int:
    """``count`` distinct 16 px digit PNGs in 10 classes (every digit upscaled, then shifted copies as needed)."""
    return common.write_upscaled_digits(dest, 16, copies=-(-count // 1797), limit=count)


def plain_verify(root: Path) -> float:
    """Reference: walk the class folders, read, SHA-256 and fully decode every file, one process."""
    start = time.perf_counter()
    n = 0
    for label in sorted(os.listdir(root)):
        folder = root / label
        if not folder.is_dir():
            continue
        for name in sorted(os.listdir(folder)):
            data = (folder / name).read_bytes()
            hashlib.sha256(data).hexdigest()
            with Image.open(io.BytesIO(data)) as image:
                image.load()
            n += 1
    return n / (time.perf_counter() - start)


def time_split(root: Path, rounds: int) -> tuple[float, float, list[float]]:
    def ours() -> float:
        start = time.perf_counter()
        result = make_split(root, SplitConfig(val=0.2, seed=0, force=True))
        return len(result.manifest.rows) / (time.perf_counter() - start)

    ours()  # warm-up: page cache
    plain_verify(root)
    result = common.interleave({"make_split": ours, "plain loop": lambda: plain_verify(root)}, rounds)
    both = result["make_split"] + result["plain loop"]
    return common.median(result["make_split"]), common.median(result["plain loop"]), both


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser)
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="loader workers (default 0 1 2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--digits", type=int, default=None, help="digits per class (default all, 180; --quick 6)")
    parser.add_argument("--jpegs", type=int, default=None, help="256 px JPEGs to write (default 300; --quick 24)")
    parser.add_argument("--split-images", type=int, default=None, help="PNGs for the split timing (10000; quick 1000)")
    parser.add_argument(
        "--tensor-baseline", action="store_true", help="baseline converts to a tensor first (all ops on tensors)"
    )
    args = parser.parse_args(argv)
    device = common.resolve_args(args)
    workers = args.workers if args.workers is not None else ([0, 1] if args.quick else [0, 1, 2])
    per_class = args.digits if args.digits is not None else (6 if args.quick else None)
    jpegs = args.jpegs if args.jpegs is not None else (24 if args.quick else 300)
    split_images = args.split_images if args.split_images is not None else (1000 if args.quick else 10000)

    common.print_header(
        "Data loading: ManifestDataset + EpochBatchSampler + make_loader vs torchvision ImageFolder",
        device,
        f"ours/ImageFolder >= {TARGET} on every row",
        [
            f"batch {args.batch_size}; one measurement = one full pass; {args.rounds} interleaved rounds after one "
            "warm-up pass each, median per side; baseline ops on "
            + ("tensors (ToImage first)" if args.tensor_baseline else "PIL images (ToImage before ToDtype)"),
        ],
    )
    mean1, std1 = imagenet_stats(1)
    with common.temp_dir("data") as tmp:
        tmp = Path(tmp)
        n_digits = common.write_upscaled_digits(tmp / "digits64", 64, per_class=per_class)
        common.write_smooth_jpegs(tmp / "jpeg256", jpegs, size=256)
        datasets = [
            DataSet(
                "digits 64 px PNG, L",
                tmp / "digits64",
                PreprocessConfig(image_size=64, resize_size=64, in_channels=1, mean=mean1, std=std1, augment="crop"),
                n_digits,
            ),
            DataSet(
                "256 px JPEG, RGB -> 224",
                tmp / "jpeg256",
                PreprocessConfig(image_size=224, resize_size=256, in_channels=3, augment="rrc"),
                jpegs,
            ),
        ]
        headers = [
            "dataset",
            "images",
            "transform",
            "workers",
            "ours img/s",
            "ImageFolder img/s",
            "ratio",
            "spread",
            "verdict",
        ]
        rows = []
        worst = float("inf")
        for data in datasets:
            for kind in ("train", "eval"):
                for w in workers:
                    ours, base = compare_loaders(
                        data, kind, w, args.batch_size, args.rounds, device, args.tensor_baseline
                    )
                    a, b = common.median(ours), common.median(base)
                    r = common.ratio(a, b)
                    verdict = common.judge(ours, base, TARGET)
                    worst = min(worst, r)
                    aug = data.pre.augment if kind == "train" else f"resize {data.pre.resize_size} + centre crop"
                    rows.append(
                        [
                            data.name,
                            data.images,
                            f"{kind} ({aug})",
                            w,
                            common.fmt(a),
                            common.fmt(b),
                            f"{r:.3f}",
                            common.spread(ours + base),
                            verdict,
                        ]
                    )
                    print(f"  {data.name} {kind} workers={w}: ratio {r:.3f}", file=sys.stderr, flush=True)
        common.print_table(headers, rows)
        print(
            f"lowest ratio {worst:.3f} (target >= {TARGET}): {'met' if worst >= TARGET else 'not met'}. "
            "spread = fastest / slowest pass of the row (both sides) - 1; verdict 'noise' = below the target but "
            "the sides' measurements overlap (rerun with more --rounds), 'BELOW' = slower in every measurement."
        )
        print()

        split_root = tmp / "split16"
        n = write_small_pngs(split_root, split_images)
        split_rounds = min(args.rounds, 3)
        a, b, both = time_split(split_root, split_rounds)
        cpus = os.cpu_count() or 1
        print(f"## make_split: scan + SHA-256 + decode of {n:,} PNGs (16 px, 10 classes)")
        print()
        common.print_table(
            ["what", "processes", "seconds", "images/s", "vs plain loop"],
            [
                ["make_split (scan, verify, stratify, write manifest)", min(8, cpus), f"{n / a:.2f}", common.fmt(a, 0),
                 f"{common.ratio(a, b):.2f}x"],
                ["plain loop: read + sha256 + Pillow load", 1, f"{n / b:.2f}", common.fmt(b, 0), "1.00x"],
            ],
        )  # fmt: skip
        print(f"{split_rounds} interleaved rounds, median; spread {100 * (max(both) / min(both) - 1):.0f}%.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

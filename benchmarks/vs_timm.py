"""Wall time of a whole ``resnet train`` against timm's ``train.py`` doing the same work (interleaved A/B).

Both sides are fresh processes, timed from launch to exit, so start-up (imports, data checks) and per-epoch
fixed work (validation, checkpoint writes) count, not just training steps. The setting: ResNet-18 with the
ImageNet stem, scikit-learn's digits as 64 px RGB PNGs, a seeded 80/20 split (``make_split``; timm gets the
same images as ``train/`` and ``validation/`` ImageFolders), batch 64, AdamW lr 1e-3 weight decay 0.05, 2
epochs, no augmentation, 0 loader workers, fp32, contiguous layout, every epoch validated and checkpointed.
Rounds alternate ours, timm, ours, timm, ...; reported: the ratio of the median wall times and the range of the
per-round ratios. Target: timm/ours >= 1.00 (our wall time at most timm's). It also reports each side's fixed
costs, its wall time outside the epochs' training and validation (ours from history.csv's epoch times, timm's
from its log's average batch times), against the same target.

timm's ``train.py`` is not in its wheel; get it from the repository::

    pip install --no-deps timm && pip install pyyaml       # not torch: keep the installed one
    git clone --depth 1 https://github.com/huggingface/pytorch-image-models /tmp/timm-src
    python benchmarks/vs_timm.py --timm-train /tmp/timm-src/train.py [--rounds 3] [--json]
    python benchmarks/vs_timm.py --quick                     # our side only, a few steps (no timm needed)

The two sides differ where the tools do: timm's train loader drops the last partial batch (22 steps of 64
here; ours trains on every image, 23 steps), and ours also measures a train subset the size of val in eval
mode each epoch (the generalisation gap) and writes best.pt beside last.pt. timm's ``--sched none`` fails in
some releases, so timm runs ``cosine`` without warm-up (ours: ``plateau``): both step once per epoch.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

from resnet_cli.config import SplitConfig
from resnet_cli.data.split import Manifest, make_split

TARGET = 1.0
ROOT = Path(__file__).resolve().parent.parent


def timm_layout(manifest: Manifest, dest: Path) -> None:
    """The manifest's train and val parts as ``dest/train/<class>/`` and ``dest/validation/<class>/`` (timm's
    default split folders), hard-linked where the file system allows (copies elsewhere)."""
    for part, folder in (("train", "train"), ("val", "validation")):
        for row in manifest.part(part):
            target = dest / folder / row.label / Path(row.path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(manifest.root / row.path, target)
            except OSError:
                shutil.copyfile(manifest.root / row.path, target)


def our_command(data: Path, out: Path, args) -> list[str]:
    command = [
        sys.executable, "-m", "resnet_cli", "train", "--data", str(data), "--out", str(out), "--arch", "18",
        "--image-size", str(args.image_size), "--in-channels", "3", "--no-small-input", "--augment", "none",
        "--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--workers", str(args.workers),
        "--precision", "fp32", "--no-channels-last", "--lr", "1e-3", "--weight-decay", "0.05", "--seed", "0",
        "--device", args.device.type, "--quiet",
    ]  # fmt: skip
    return command + (["--max-steps", str(args.steps)] if args.steps else [])


def timm_command(train_py: Path, data: Path, out: Path, name: str, args) -> list[str]:
    size = str(args.image_size)
    return [
        sys.executable, str(train_py), "--data-dir", str(data), "--model", "resnet18", "--num-classes", "10",
        "--img-size", size, "--input-size", "3", size, size, "--crop-pct", "1.0", "-b", str(args.batch_size),
        "--opt", "adamw", "--lr", "1e-3", "--weight-decay", "0.05", "--sched", "cosine", "--warmup-epochs", "0",
        "--epochs", str(args.epochs), "--no-aug", "--smoothing", "0", "--workers", str(args.workers),
        "--device", args.device.type, "--no-prefetcher", "--checkpoint-hist", "1", "--log-interval", "1000",
        "--seed", "0", "--output", str(out), "--experiment", name,
    ]  # fmt: skip


def run_timed(command: list[str], log: Path) -> float:
    """Wall seconds of ``command`` from launch to exit; its output goes to ``log``.

    Raises:
        SystemExit: the command failed (with the end of its log).
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with open(log, "wb") as handle:
        start = time.perf_counter()
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, check=False).returncode
        wall = time.perf_counter() - start
    if code != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise SystemExit(f"{' '.join(command[:4])} ... exited {code}:\n{tail}")
    return wall


def epoch_seconds(run: Path) -> list[float]:
    """Each epoch's training plus validation seconds, from the run's history.csv."""
    with open(run / "history.csv", newline="", encoding="utf-8") as handle:
        return [float(row["epoch_time"]) for row in csv.DictReader(handle)]


TIMM_TRAIN = re.compile(r"^Train: (\d+) \[\s*(\d+)/(\d+).*?\(([\d.]+)s,")
TIMM_TEST = re.compile(r"^Test: \[\s*(\d+)/(\d+)\]\s+Time: [\d.]+ \(([\d.]+)\)")


def timm_epoch_seconds(log: Path) -> float:
    """timm's training plus validation seconds over all epochs, from its log: each pass's average batch time
    (data included) times its batches, read from the pass's last logged batch."""
    train: dict[int, float] = {}
    tests: list[tuple[int, float]] = []
    for line in log.read_text(errors="replace").splitlines():
        if found := TIMM_TRAIN.match(line):
            epoch, _, batches, mean = found.groups()
            train[int(epoch)] = int(batches) * float(mean)
        elif found := TIMM_TEST.match(line):
            index, last, mean = found.groups()
            if not tests or int(index) <= tests[-1][0]:
                tests.append((0, 0.0))  # a new validation pass
            tests[-1] = (int(index), (int(last) + 1) * float(mean))
    return sum(train.values()) + sum(seconds for _, seconds in tests)


def main(argv: list[str] | None = None) -> int:
    bench = _common.Bench(__doc__, rounds=3)
    bench.parser.add_argument("--timm-train", type=Path, default=None, help="timm's train.py (required unless quick)")
    bench.parser.add_argument("--epochs", type=int, default=2)
    bench.parser.add_argument("--image-size", type=int, default=None, help="px (default 64; quick 32)")
    bench.parser.add_argument("--batch-size", type=int, default=None, help="default 64 (quick 8)")
    bench.parser.add_argument("--workers", type=int, default=0, help="loader workers, both sides (default 0)")
    bench.parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (logs, runs)")
    args = bench.parse(argv)
    if args.timm_train is None and not args.quick:
        bench.parser.error("--timm-train PATH is required (timm's train.py: see this script's docstring)")
    if args.timm_train is not None and not args.timm_train.is_file():
        bench.parser.error(f"--timm-train {args.timm_train} is not a file: pass the path of timm's train.py")
    args.image_size = args.image_size or (32 if args.quick else 64)
    args.batch_size = args.batch_size or (8 if args.quick else 64)
    args.steps = 2 if args.quick else 0  # quick: a couple of steps per epoch
    with tempfile.TemporaryDirectory(prefix="resnet-bench-vs-timm-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data, timm_data = work / "digits", work / "timm-digits"
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(timm_data, ignore_errors=True)
        images = _common.write_digits_at(data, args.image_size, per_class=5 if args.quick else None, rgb=True)
        manifest = make_split(data, SplitConfig(val=0.2, seed=0)).manifest
        timm_layout(manifest, timm_data)
        train, val = len(manifest.part("train")), len(manifest.part("val"))
        bench.say(f"resnet18 (ImageNet stem), {images} digits at {args.image_size} px RGB: {train} train, {val} val; "
                  f"batch {args.batch_size}, {args.epochs} epochs, workers {args.workers}, fp32")  # fmt: skip

        fixed: list[float] = []
        timm_fixed: list[float] = []

        def ours(round_: list[int] = [0]) -> float:  # noqa: B006 (a round counter)
            round_[0] += 1
            out = work / f"ours-{round_[0]}"
            shutil.rmtree(out, ignore_errors=True)
            wall = run_timed(our_command(data, out, args), work / f"ours-{round_[0]}.log")
            fixed.append(wall - sum(epoch_seconds(out)))
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
            return wall

        def timm(round_: list[int] = [0]) -> float:  # noqa: B006
            round_[0] += 1
            name = f"round-{round_[0]}"
            log = work / f"timm-{round_[0]}.log"
            wall = run_timed(timm_command(args.timm_train, timm_data, work / "timm", name, args), log)
            timm_fixed.append(wall - timm_epoch_seconds(log))
            if not args.keep:
                shutil.rmtree(work / "timm" / name, ignore_errors=True)
            return wall

        sides = {"ours": ours, **({"timm": timm} if args.timm_train else {})}
        walls = _common.interleave(sides, args.rounds)
        rows = [[name, statistics.median(v), " / ".join(f"{x:.1f}" for x in v)] for name, v in walls.items()]
        bench.table("wall", ["side", "wall s (median)", "rounds"], rows)
        bench.say(f"ours outside the epochs' training and validation (start-up, checks, checkpoint writes): "
                  f"median {statistics.median(fixed):.1f} s of {statistics.median(walls['ours']):.1f} s")  # fmt: skip
        if args.timm_train:
            bench.say(f"timm outside its epochs' training and validation (its log's batch times): median "
                      f"{statistics.median(timm_fixed):.1f} s of {statistics.median(walls['timm']):.1f} s")  # fmt: skip
            fixed_ratio, fixed_spread = _common.compare([1 / f for f in fixed], [1 / f for f in timm_fixed])
            bench.say(f"fixed costs ours/timm: {1 / fixed_ratio:.3f}")
            bench.verdict("fixed costs timm/ours", fixed_ratio, TARGET, fixed_spread)
            # Higher is better for compare(): timm's wall over ours is our speed relative to timm's.
            ratio, spread = _common.compare([1 / w for w in walls["ours"]], [1 / w for w in walls["timm"]])
            bench.say(f"wall time ours/timm: {1 / ratio:.3f}")
            bench.verdict("wall timm/ours", ratio, TARGET, spread)
        else:
            bench.say("wall timm/ours: not measured (quick run without --timm-train: our side only)")
            bench.say("timm side would run: " + " ".join(timm_command(Path("train.py"), timm_data, work, "r", args)))
    return bench.finish()


if __name__ == "__main__":
    raise SystemExit(main())

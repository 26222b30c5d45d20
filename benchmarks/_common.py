"""What the benchmark scripts share: arguments, the interleaved A/B measurement, verdict lines and test images.

Where a side is a whole run (``fit``, a loader pass), the sides alternate A, B, A, B, ... in one process, so a
machine slowing down or speeding up affects both alike; reported: the ratio of the medians and the range of
the per-round ratios (its spread).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Run as ``python benchmarks/x.py`` from anywhere: make the repository importable without the editable install.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from PIL import Image


class Bench:
    """Arguments, output and verdicts of one benchmark script.

    With ``--json`` stdout carries exactly one JSON document (tables, verdicts, machine) and the human lines go
    to stderr; otherwise they go to stdout.
    """

    def __init__(self, doc: str, rounds: int = 0) -> None:
        self.parser = argparse.ArgumentParser(description=doc.splitlines()[0])
        self.parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, 1 round, seconds")
        if rounds:
            self.parser.add_argument("--rounds", type=int, default=None, help=f"A/B rounds (default {rounds}; quick 1)")
        self.parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
        self.parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
        self.default_rounds = rounds
        self.results: dict[str, object] = {"verdicts": []}

    def parse(self, argv: list[str] | None = None) -> argparse.Namespace:
        args = self.parser.parse_args(argv)
        if args.quick:
            torch.set_num_threads(1)  # a smoke run, often beside other work: no threads waiting on each other
        if self.default_rounds:
            args.rounds = max(1, args.rounds or (1 if args.quick else self.default_rounds))
        auto = "cuda" if torch.cuda.is_available() else "cpu"
        args.device = torch.device(auto if args.device == "auto" else args.device)
        if args.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fit sets it; baselines must not run without it
        self.json = args.json
        gpu = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "none"
        self.results["machine"] = (
            f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads; torch "
            f"{torch.__version__}; Python {platform.python_version()}; GPU {gpu}"
        )
        self.say(f"machine: {self.results['machine']}")
        return args

    def say(self, text: str = "") -> None:
        print(text, file=sys.stderr if self.json else sys.stdout, flush=True)

    def table(self, name: str, headers: list[str], rows: list[list[object]]) -> None:
        self.results[name] = [dict(zip(headers, row, strict=True)) for row in rows]
        self.say("| " + " | ".join(headers) + " |")
        self.say("|" + "---|" * len(headers))
        for row in rows:
            self.say("| " + " | ".join(f"{c:,.1f}" if isinstance(c, float) else str(c) for c in row) + " |")
        self.say()

    def verdict(self, name: str, ratio: float, target: float, spread: str = "-") -> None:
        """Print ``name 0.970 (target >= 0.95): met``, the line the smoke test looks for."""
        met = ratio >= target
        self.results["verdicts"].append({"name": name, "value": ratio, "target": target, "met": met, "spread": spread})
        rounds = f"; per-round ratios {spread}" if spread != "-" else ""
        self.say(f"{name} {ratio:.3f} (target >= {target}): {'met' if met else 'NOT met'}{rounds}")

    def finish(self) -> int:
        if self.json:
            print(json.dumps(self.results, indent=2, default=str))
        return 0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleave(sides: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Call each side once per round, in order (A, B, A, B, ...); each call returns one measurement."""
    results: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(rounds):
        for name, measure in sides.items():
            results[name].append(float(measure()))
        line = ", ".join(f"{name} {values[-1]:.1f}" for name, values in results.items())
        print(f"  round {r + 1}/{rounds}: {line}", file=sys.stderr, flush=True)
    return results


def compare(ours: list[float], base: list[float]) -> tuple[float, str]:
    """Ratio of the medians (higher is better for both) and the range of the per-round ratios."""
    ratio = statistics.median(ours) / statistics.median(base)
    per_round = [a / b for a, b in zip(ours, base, strict=True)]
    return ratio, f"{min(per_round):.3f}-{max(per_round):.3f}" if len(per_round) > 1 else "-"


def timed(work: Callable[[], int], device: torch.device) -> float:
    """Items per second of one call of ``work`` (which returns how many items it processed)."""
    sync(device)
    start = time.perf_counter()
    items = work()
    sync(device)
    return items / (time.perf_counter() - start)


def write_digits_at(dest: Path, size: int, per_class: int | None = None, rgb: bool = False) -> int:
    """The project's sample digits (``write_digits``), upscaled from 8 px to ``size`` px, as PNGs under ``dest``."""
    from resnet_cli.data.sample import write_digits

    result = write_digits(dest, per_class=per_class)
    for file in result.dest.glob("*/*.png"):
        image = Image.open(file).resize((size, size), Image.Resampling.BICUBIC)
        (image.convert("RGB") if rgb else image).save(file)
    return result.images


def write_noise(dest: Path, count: int, size: int, suffix: str = ".jpg", classes: int = 4) -> int:
    """``count`` distinct smooth RGB images (upsampled 8x8 noise), ``size`` px, over ``classes`` folders."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = dest / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        noise = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), mode="RGB")
        noise.resize((size, size), Image.Resampling.BICUBIC).save(folder / f"img_{i:05d}{suffix}")
    return count

"""Helpers shared by the benchmark scripts: machine description, interleaved timing, markdown tables and the
real images the benchmarks run on (scikit-learn's digits, upscaled, and smooth RGB JPEGs written here).

Nothing here downloads anything. Every benchmark compares "ours" against a baseline measured in the same
process, alternating the two (A, B, A, B, ...) for several rounds and taking the median of each side, so
that a machine slowing down or speeding up during the run affects both sides alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# Run as ``python benchmarks/x.py`` from anywhere: make the repository importable without the editable install.
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def cpu_model() -> str:
    """The CPU's marketing name, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_line(device: torch.device) -> str:
    """One line naming the machine: CPU, cores, torch threads, torch version and GPU (on CUDA)."""
    import torchvision

    flags = cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    parts = [
        f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs{', ' + ' '.join(isa) if isa else ''})",
        f"torch {torch.__version__} / torchvision {torchvision.__version__}",
        f"threads {torch.get_num_threads()}",
        f"Python {platform.python_version()}",
    ]
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        parts.append(f"GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda})")
    else:
        parts.append("GPU: none used")
    return "machine: " + "; ".join(parts)


def print_header(title: str, device: torch.device, target: str, notes: Sequence[str] = ()) -> None:
    print(f"# {title}")
    print()
    print(machine_line(device))
    print()
    print(f"target: {target}")
    for note in notes:
        print(note)
    print(flush=True)


def add_common_args(parser: argparse.ArgumentParser, rounds: int = 3) -> None:
    parser.add_argument("--quick", action="store_true", help="smoke run of a few seconds (tiny sizes, 2 rounds)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument(
        "--rounds", type=int, default=None, help=f"interleaved rounds per comparison (default {rounds}; --quick: 2)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")


def resolve_args(args: argparse.Namespace, rounds: int = 3) -> torch.device:
    """Apply ``--threads``, fill ``--rounds`` and return the device (``auto``: CUDA when available)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rounds is None:
        args.rounds = 2 if args.quick else rounds
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    text = args.device.strip().lower()
    if text == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(text)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA GPU here (torch {torch.__version__})")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda:0")
    return device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleave(
    sides: dict[str, Callable[[], float]], rounds: int, on_round: Callable[[int, dict[str, float]], None] | None = None
) -> dict[str, list[float]]:
    """Call each side once per round, in the given order (A, B, A, B, ...); return every side's results.

    Each callable returns one measurement (e.g. images per second).
    """
    results: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(rounds):
        this_round = {}
        for name, measure in sides.items():
            value = float(measure())
            results[name].append(value)
            this_round[name] = value
        if on_round is not None:
            on_round(r, this_round)
    return results


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """Fastest over slowest measurement, minus one, in percent: the run-to-run noise to read a ratio against."""
    if len(values) < 2 or min(values) <= 0:
        return "-"
    return f"{100 * (max(values) / min(values) - 1):.0f}%"


def judge(ours: Sequence[float], base: Sequence[float], target: float) -> str:
    """``ok`` when median(ours)/median(base) meets ``target`` (higher is better); ``BELOW`` when it does not and
    every measurement of ours is slower than every baseline measurement scaled by the target; else ``noise``
    (below the target, but the two sides' measurements overlap: rerun with more ``--rounds``)."""
    r = ratio(median(ours), median(base))
    if r != r:
        return "-"
    if r >= target:
        return "ok"
    return "BELOW" if max(ours) < target * min(base) else "noise"


def fmt(value: float, digits: int = 1) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:,.{digits}f}"


def ratio(ours: float, base: float) -> float:
    return ours / base if base else float("nan")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; numbers right-aligned, text left-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def numeric(i: int) -> bool:
        return bool(cells) and all(_looks_numeric(r[i]) for r in cells)

    aligns = [numeric(i) for i in range(len(headers))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    lines.append(
        "|"
        + "|".join(("-" * (w + 1) + ":") if a else ("-" * (w + 2)) for w, a in zip(widths, aligns, strict=True))
        + "|"
    )
    for r in cells:
        lines.append(
            "| " + " | ".join(c.rjust(w) if a else c.ljust(w) for c, w, a in zip(r, widths, aligns, strict=True)) + " |"
        )
    return "\n".join(lines)


def _looks_numeric(text: str) -> bool:
    t = text.replace(",", "").replace("%", "").replace("x", "").replace("±", "").strip()
    if t in ("-", ""):
        return True
    try:
        float(t)
    except ValueError:
        return False
    return True


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print(markdown_table(headers, rows))
    print(flush=True)


def temp_dir(prefix: str) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=f"resnet-bench-{prefix}-")


def digits_pixels(per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The digits exactly as ``resnet_cli.data.sample.write_digits`` writes them: (N, 8, 8) uint8 and labels.

    Read back from the PNGs ``write_digits`` produces, so the benchmarks use the project's sample data.
    """
    from PIL import Image

    from resnet_cli.data.sample import write_digits

    with temp_dir("digits") as tmp:
        result = write_digits(Path(tmp) / "digits", per_class=per_class)
        # scikit-learn's order (the index in the name), where the classes are interleaved
        files = sorted(result.dest.glob("*/*.png"), key=lambda f: int(f.stem.rsplit("_", 1)[1]))
        pixels = np.stack([np.asarray(Image.open(f).convert("L")) for f in files])
        labels = np.array([int(f.parent.name) for f in files])
    return pixels, labels


def write_upscaled_digits(
    dest: Path, size: int, per_class: int | None = None, copies: int = 1, rgb: bool = False, limit: int | None = None
) -> int:
    """Write the sample digits as ``dest/<class>/<name>.png``, upscaled from 8 px to ``size`` px (bicubic).

    ``copies`` > 1 writes each digit several times, each copy shifted by a different pixel offset (so no two
    files are byte-identical); copy 1 of every digit is written before copy 2 of any, and ``limit`` stops after
    that many files (classes stay balanced). ``rgb`` writes three-channel PNGs. Returns the files written.
    """
    from PIL import Image

    pixels, labels = digits_pixels(per_class)
    offsets = [(0, 0), (1, 0), (0, 1), (1, 1), (-1, 0), (0, -1), (-1, -1), (1, -1), (-1, 1), (2, 0), (0, 2)]
    if copies > len(offsets):
        raise ValueError(f"at most {len(offsets)} copies of each digit")
    for label in sorted(set(labels.tolist())):
        (dest / str(label)).mkdir(parents=True, exist_ok=True)
    big = [
        np.asarray(Image.fromarray(image, mode="L").resize((size, size), Image.Resampling.BICUBIC)) for image in pixels
    ]
    count = 0
    for k in range(copies):
        dy, dx = offsets[k]
        for index, (image, label) in enumerate(zip(big, labels, strict=True)):
            if limit is not None and count >= limit:
                return count
            shifted = Image.fromarray(np.roll(image, (dy, dx), axis=(0, 1)) if k else image, mode="L")
            if rgb:
                shifted = shifted.convert("RGB")
            shifted.save(dest / str(label) / f"{label}_{index:04d}_{k}.png", format="PNG", optimize=False)
            count += 1
    return count


def write_smooth_jpegs(dest: Path, count: int, size: int = 256, classes: int = 4, seed: int = 0) -> int:
    """Write ``count`` random smooth RGB JPEGs (bicubic-upsampled 8x8 noise), ``size`` x ``size``, quality 90,
    spread over ``classes`` class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(classes):
        (dest / f"c{c}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        noise = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(noise, mode="RGB").resize((size, size), Image.Resampling.BICUBIC)
        image.save(dest / f"c{i % classes}" / f"img_{i:05d}.jpg", format="JPEG", quality=90)
    return count


class Timer:
    """``with Timer(device) as t: ...`` then ``t.seconds`` (synchronises CUDA on entry and exit)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        sync(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self._start


def digits_batch(batch: int, size: int, channels: int = 3) -> torch.Tensor:
    """A float batch of real digit images: ``batch`` sample digits upscaled (bicubic) to ``size`` px, repeated to
    ``channels`` channels, scaled to [0, 1] and normalised with ImageNet's mean and std."""
    from resnet_cli.config import IMAGENET_MEAN, IMAGENET_STD

    pixels, _ = digits_pixels(per_class=-(-batch // 10))
    x = torch.from_numpy(pixels[:batch]).float().div(255).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    x = x.repeat(1, channels, 1, 1)
    if channels == 3:
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    else:
        mean = torch.tensor(sum(IMAGENET_MEAN) / 3).view(1, 1, 1, 1)
        std = torch.tensor(sum(IMAGENET_STD) / 3).view(1, 1, 1, 1)
    return ((x - mean) / std).contiguous()

"""A study's overhead: ``resnet study`` against running the same ``resnet train ... && resnet eval ...`` lines by hand.

The lines are the ones ``resnet study --print-commands`` prints, run one after another with bash; the study runs the
same grid in a fresh folder. Both sides count finished runs per second of wall time, alternating (A, B, A, B, ...),
and the ratio of the medians is reported. Target: study/by-hand >= 0.98 (an overhead of at most 2%).

    python benchmarks/study.py [--rounds 3] [--epochs 1] [--quick] [--json]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

from resnet_cli.config import SplitConfig
from resnet_cli.data.split import make_split

TARGET = 0.98
ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    bench = _common.Bench(__doc__, rounds=3)
    bench.parser.add_argument("--epochs", type=int, default=2)
    args = bench.parse(argv)
    grid = ["--arch", "18", "--seeds", "1", "--fractions", "1"] if args.quick else [
        "--arch", "18", "--arch", "vit-ti/4", "--seeds", "2", "--fractions", "0.5,1"
    ]  # fmt: skip
    options = ["--epochs", "1" if args.quick else str(args.epochs), "--batch-size", "32", "--workers", "0",
               "--precision", "fp32", "--no-channels-last", *(["--max-steps", "2"] if args.quick else [])]  # fmt: skip
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT)}
    resnet = [sys.executable, "-m", "resnet_cli"]
    with tempfile.TemporaryDirectory(prefix="resnet-bench-study-") as tmp:
        data = Path(tmp) / "data"
        _common.write_digits_at(data, 8, per_class=30 if args.quick else None)
        make_split(data, SplitConfig(val=0.15, test=0.15, seed=0))
        counter = iter(range(10**6))

        def study() -> float:
            folder = Path(tmp) / f"study-{next(counter)}"
            start = time.perf_counter()
            subprocess.run([*resnet, "study", str(folder), "--data", str(data), *grid, *options, "--quiet"],
                           check=True, env=env, stdout=subprocess.DEVNULL)  # fmt: skip
            return len(list((folder / "runs").iterdir())) / (time.perf_counter() - start)

        def by_hand() -> float:
            folder = Path(tmp) / f"hand-{next(counter)}"
            printed = subprocess.run(
                [*resnet, "study", str(folder), "--data", str(data), *grid, *options, "--print-commands"],
                check=True, env=env, capture_output=True, text=True,
            ).stdout.splitlines()  # fmt: skip
            start = time.perf_counter()
            for line in printed:
                subprocess.run(["bash", "-c", line], check=True, env=env, stdout=subprocess.DEVNULL)
            return len(printed) / (time.perf_counter() - start)

        bench.say(f"grid {' '.join(grid)}; options {' '.join(options)}")
        result = _common.interleave({"study": study, "by hand": by_hand}, args.rounds)
        ratio, spread = _common.compare(result["study"], result["by hand"])
        bench.table("study", ["side", "runs/s (median)"], [
            ["study", sorted(result["study"])[len(result["study"]) // 2]],
            ["by hand", sorted(result["by hand"])[len(result["by hand"]) // 2]],
        ])  # fmt: skip
        bench.verdict("study/by-hand", ratio, TARGET, spread)
    return bench.finish()


if __name__ == "__main__":
    raise SystemExit(main())

"""Evaluation speed: ``resnet_cli.engine.evaluate.evaluate`` against a bare ``torch.inference_mode`` loop.

A small checkpoint is trained first (``fit``, 1 epoch of a few steps, on the sample digits upscaled to
``--image-size``). Ours: ``evaluate(run, split="val", save=False)``; its report's ``images_per_s`` covers its
own loop only (data loading, forward, logits moved to the CPU), not loading the weights or computing the
metrics. Baseline: the same weights (``load_weights(...).build()``), the same dataset (``ManifestDataset`` with
``eval_transform`` of the checkpoint's preprocessing), batch size, sampler, loader (``make_loader``, a fresh
one per pass as ``evaluate`` makes), precision and memory layout, in a bare loop under
``torch.inference_mode()`` that moves the logits to the CPU, timed the same way. The sides alternate for
``--rounds`` rounds after one warm-up each; medians and the ratio ours/baseline are reported per worker count.
Target: ratio >= 0.95.

    python benchmarks/evaluate.py           # CPU defaults: resnet18, 32 px digits, batch 64, workers 0 and 2
    python benchmarks/evaluate.py --quick   # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common
import torch

from resnet_cli.config import SplitConfig, TrainConfig
from resnet_cli.data.dataset import EpochBatchSampler, ManifestDataset, make_loader
from resnet_cli.data.split import make_split
from resnet_cli.data.transforms import eval_transform
from resnet_cli.engine.device import resolve_channels_last
from resnet_cli.engine.evaluate import evaluate
from resnet_cli.engine.train import fit
from resnet_cli.io.weights import find_manifest, load_weights
from resnet_cli.models import canonical_arch

TARGET = 0.95
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser, rounds=5)
    parser.add_argument("--arch", default="18", help="architecture (default 18)")
    parser.add_argument("--image-size", type=int, default=32, help="px the digits are upscaled to (default 32)")
    parser.add_argument("--batch-size", type=int, default=None, help="evaluation batch (default 64; --quick 16)")
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="loader workers (default 0 2; quick 0)")
    parser.add_argument("--precision", default="auto", help="evaluate's --precision (default auto)")
    args = parser.parse_args(argv)
    device = common.resolve_args(args, rounds=5)
    cuda = device.type == "cuda"
    arch = canonical_arch(args.arch)
    batch = args.batch_size or (16 if args.quick else 64)
    workers_list = args.workers if args.workers is not None else ([0] if args.quick else [0, 2])

    common.print_header(
        f"Evaluation speed: resnet_cli.engine.evaluate.evaluate vs a bare inference_mode loop ({arch})",
        device,
        f"ours/baseline >= {TARGET}",
        [
            f"batch {batch}; one measurement = one pass over the val part (fresh loader, logits to the CPU); "
            f"{args.rounds} interleaved rounds after one warm-up each, median per side",
        ],
    )
    with common.temp_dir("evaluate") as tmp:
        root = Path(tmp) / "data"
        run = Path(tmp) / "run"
        n = common.write_upscaled_digits(root, args.image_size, per_class=10 if args.quick else None)
        make_split(root, SplitConfig(val=0.3, seed=0))
        start = time.perf_counter()
        fit(
            TrainConfig(
                data=str(root),
                arch=arch,
                out=str(run),
                epochs=1,
                batch_size=batch,
                image_size=args.image_size,
                workers=0,
                device=str(device),
                max_steps_per_epoch=1 if args.quick else 3,
                seed=0,
            )
        )
        weights = load_weights(run)
        manifest = find_manifest(weights, None, None)
        rows = manifest.part("val")
        pre = weights.preprocess
        print(
            f"checkpoint: {arch} trained {time.perf_counter() - start:.1f} s (1 epoch, a few steps) on {n} sample "
            f"digits upscaled to {args.image_size} px; evaluating the {len(rows)} val images"
        )

        def ours(workers: int) -> tuple[float, str, str]:
            report = evaluate(
                run,
                split="val",
                batch_size=batch,
                device=str(device),
                precision=args.precision,
                workers=workers,
                save=False,
            )
            return report.images_per_s, report.precision, report.device

        # What evaluate resolves (precision and device), so the baseline runs the same way.
        _, precision, where = ours(0)
        channels_last = resolve_channels_last(None, device)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        print(
            f"evaluate runs on {where} in {precision}, channels_last {'on' if channels_last else 'off'}; "
            "the baseline does the same"
        )
        print(flush=True)
        model = weights.build().to(device).to(memory_format=layout).eval()
        dataset = ManifestDataset(
            manifest.root, rows, weights.classes, eval_transform(pre), pre.in_channels, pre.background
        )
        dtype = _DTYPES.get(precision)

        def baseline(workers: int) -> float:
            sampler = EpochBatchSampler(len(dataset), batch, 0, shuffle=False, train=False)
            loader = make_loader(dataset, sampler, workers, 0, pin_memory=cuda)
            start = time.perf_counter()
            chunks, targets = [], []
            with torch.inference_mode():
                for x, y in loader:
                    x = x.to(device, non_blocking=True).contiguous(memory_format=layout)
                    cast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
                    with cast:
                        logits = model(x)
                    chunks.append(logits.float().cpu())
                    targets.append(y)
            seconds = time.perf_counter() - start
            return len(dataset) / seconds

        table = []
        worst = float("inf")
        for workers in workers_list:
            ours(workers)  # warm-up
            baseline(workers)
            result = common.interleave(
                {"ours": lambda w=workers: ours(w)[0], "baseline": lambda w=workers: baseline(w)}, args.rounds
            )
            a, b = common.median(result["ours"]), common.median(result["baseline"])
            r = common.ratio(a, b)
            worst = min(worst, r)
            verdict = common.judge(result["ours"], result["baseline"], TARGET)
            table.append(
                [
                    f"{len(rows)} val, {args.image_size} px",
                    batch,
                    workers,
                    precision,
                    common.fmt(a),
                    common.fmt(b),
                    f"{r:.3f}",
                    common.spread(result["ours"] + result["baseline"]),
                    verdict,
                ]
            )
            print(f"  workers={workers}: ratio {r:.3f}", file=sys.stderr, flush=True)
        common.print_table(
            [
                "data",
                "batch",
                "workers",
                "precision",
                "evaluate img/s",
                "bare loop img/s",
                "ratio",
                "spread",
                "verdict",
            ],
            table,
        )
        print(
            f"lowest ratio {worst:.3f} (target >= {TARGET}): {'met' if worst >= TARGET else 'not met'}. "
            "spread = fastest / slowest pass of the row (both sides) - 1; verdict 'noise' = below the target but the "
            "sides' measurements overlap (rerun with more --rounds), 'BELOW' = slower in every measurement."
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

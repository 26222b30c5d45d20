"""Evaluation speed: ``resnet_cli.engine.evaluate.evaluate`` against a bare ``torch.inference_mode`` loop.

A small checkpoint is trained first (``fit``, 1 epoch of a few steps on the sample digits upscaled to
``--image-size``). Ours: ``evaluate(run, split="val", save=False)``; its ``images_per_s`` covers its loop
(data loading, forward, logits to the CPU), not loading the weights or the metrics. Baseline: the same weights
(``load_weights(run).build()``), dataset, batch, sampler, a fresh ``make_loader`` per pass (as ``evaluate``
makes), precision and memory layout, in a bare loop that moves the logits to the CPU. The sides alternate for
``--rounds`` rounds after a warm-up each. Target: ours/bare >= 0.95 for every worker count.

    python benchmarks/evaluate.py [--workers 0 2] [--quick] [--json]
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import _common
import torch

from resnet_cli.config import SplitConfig, TrainConfig
from resnet_cli.data.dataset import EpochBatchSampler, ManifestDataset, make_loader
from resnet_cli.data.split import make_split
from resnet_cli.data.transforms import eval_transform
from resnet_cli.engine.device import resolve_channels_last
from resnet_cli.engine.evaluate import evaluate
from resnet_cli.engine.train import fit
from resnet_cli.io.weights import load_weights

TARGET = 0.95


def main(argv: list[str] | None = None) -> int:
    bench = _common.Bench(__doc__, rounds=5)
    bench.parser.add_argument("--arch", default="resnet18")
    bench.parser.add_argument("--image-size", type=int, default=None, help="px (default 32; quick 8)")
    bench.parser.add_argument("--batch-size", type=int, default=None, help="default 64 (quick 16)")
    bench.parser.add_argument("--workers", type=int, nargs="+", default=None, help="default 0 2 (quick 0)")
    bench.parser.add_argument("--precision", default="auto", help="evaluate's --precision")
    args = bench.parse(argv)
    device = args.device
    size, batch = args.image_size or (8 if args.quick else 32), args.batch_size or (16 if args.quick else 64)
    with tempfile.TemporaryDirectory(prefix="resnet-bench-evaluate-") as tmp:
        root, run = Path(tmp) / "data", Path(tmp) / "run"
        _common.write_digits_at(root, size, per_class=5 if args.quick else None)
        manifest = make_split(root, SplitConfig(val=0.3, seed=0)).manifest
        fit(TrainConfig(data=str(root), arch=args.arch, out=str(run), epochs=1, batch_size=batch, image_size=size,
                        workers=0, device=str(device), max_steps_per_epoch=1 if args.quick else 3, seed=0))  # fmt: skip
        weights = load_weights(run)
        rows = manifest.part("val")

        resolved: dict[str, str] = {}

        def ours(workers: int) -> float:
            report = evaluate(run, "val", batch_size=batch, device=str(device), precision=args.precision,
                              workers=workers, save=False)  # fmt: skip
            resolved["precision"] = report.precision
            return report.images_per_s

        ours(0)  # what evaluate resolves, so the bare loop runs the same way
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolved["precision"])
        layout = torch.channels_last if resolve_channels_last(None, device) else torch.contiguous_format
        model = weights.build().to(device, memory_format=layout).eval()
        pre = weights.preprocess
        dataset = ManifestDataset(root, rows, weights.classes, eval_transform(pre), pre.in_channels, pre.background)

        def bare(workers: int) -> float:
            sampler = EpochBatchSampler(len(dataset), batch, 0, shuffle=False, train=False)
            loader = make_loader(dataset, sampler, workers, 0, pin_memory=device.type == "cuda")

            def work() -> int:
                chunks = []
                with torch.inference_mode():
                    for x, _ in loader:
                        x = x.to(device, non_blocking=True).contiguous(memory_format=layout)
                        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                            chunks.append(model(x).float().cpu())
                return sum(len(c) for c in chunks)

            return _common.timed(work, device)

        bench.say(
            f"{args.arch}, {len(rows)} val images at {size} px, batch {batch}, {resolved['precision']} on {device}"
        )
        table = []
        for w in args.workers if args.workers is not None else [0] if args.quick else [0, 2]:
            ours(w), bare(w)  # warm-up
            result = _common.interleave({"evaluate": lambda w=w: ours(w), "bare": lambda w=w: bare(w)}, args.rounds)
            ratio, spread = _common.compare(result["evaluate"], result["bare"])
            table.append([w, statistics.median(result["evaluate"]), statistics.median(result["bare"]),
                          f"{ratio:.3f}", spread])  # fmt: skip
        bench.table("evaluate", ["workers", "evaluate img/s", "bare loop img/s", "ratio", "spread"], table)
        bench.verdict(f"evaluate/bare (lowest of {len(table)})", min(float(r[3]) for r in table), TARGET)
    return bench.finish()


if __name__ == "__main__":
    raise SystemExit(main())

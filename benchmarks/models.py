"""Model speed: our from-scratch ResNets against torchvision's, with the same weights and the same work.

Measured: images per second of ``resnet_cli.models.build_model(arch)`` and ``torchvision.models.<arch>()``
on one batch of the sample digits (upscaled, three channels), for the forward pass (eval mode,
``torch.inference_mode``) and forward + backward (train mode, loss = mean of the logits, gradients cleared
between steps; no optimiser), in fp32 and in bf16 autocast, with channels_last off and on.
torchvision's randomly initialised state dict is loaded into ours with ``strict=True``, so both networks
hold identical weights and do identical arithmetic.

Each row alternates the two models (ours, torchvision, ours, ...) for ``--rounds`` rounds after warm-up,
times every measurement with ``time.perf_counter`` (CUDA synchronised), and reports the median of each side
and the ratio ours/torchvision. Target: ratio >= 0.98 on every row.

    python benchmarks/models.py                 # CPU defaults: batch 16, 64 px
    python benchmarks/models.py --device cuda   # 224 px on CUDA
    python benchmarks/models.py --quick         # smoke run of a few seconds
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
import torchvision
from torch import nn

from resnet_cli.models import build_model

TARGET = 0.98


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_step(model: nn.Module, x: torch.Tensor, mode: str, precision: str, device: torch.device):
    """One forward (``fwd``) or forward + backward (``fwd+bwd``) of one batch."""
    if mode == "fwd":

        def step() -> None:
            with torch.inference_mode(), autocast(device, precision):
                model(x)

        return step

    def train_step() -> None:
        with autocast(device, precision):
            out = model(x)
        out.float().mean().backward()
        model.zero_grad(set_to_none=True)

    return train_step


def timed(step, iters: int, device: torch.device) -> float:
    """Seconds for ``iters`` calls of ``step`` (synchronised on CUDA)."""
    common.sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    common.sync(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser, rounds=5)
    parser.add_argument(
        "--arch",
        nargs="+",
        default=None,
        help="architectures to compare (default resnet34 resnet50; --quick: resnet34)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default 16 (--quick: 4)")
    parser.add_argument("--image-size", type=int, default=None, help="default 64 on the CPU, 224 on CUDA (--quick: 32)")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--mode", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    parser.add_argument(
        "--seconds", type=float, default=None, help="aim of one measurement, in seconds (CPU 0.75, CUDA 0.2; quick 0)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="warm-up iterations per model and row (CPU 2, CUDA 5; --quick 1)"
    )
    args = parser.parse_args(argv)
    device = common.resolve_args(args, rounds=5)
    cuda = device.type == "cuda"
    batch = args.batch_size or (4 if args.quick else 16)
    size = args.image_size or (32 if args.quick else 224 if cuda else 64)
    seconds = args.seconds if args.seconds is not None else (0.0 if args.quick else 0.2 if cuda else 0.75)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5 if cuda else 2)
    archs = args.arch or (["resnet34"] if args.quick else ["resnet34", "resnet50"])
    if cuda:
        torch.backends.cudnn.benchmark = True

    common.print_header(
        "Model speed: resnet_cli.models vs torchvision.models",
        device,
        f"ours/torchvision >= {TARGET} on every row",
        [
            f"batch of {batch} sample digits upscaled to {size} px, 3 channels, 1000 classes; identical weights; "
            f"{args.rounds} interleaved rounds, median per side; fwd = eval + inference_mode, "
            "fwd+bwd = train mode, mean(logits).backward()",
        ],
    )
    headers = [
        "arch",
        "mode",
        "precision",
        "channels_last",
        "iters",
        "ours img/s",
        "torchvision img/s",
        "ratio",
        "spread",
        "verdict",
    ]
    rows = []
    worst = float("inf")
    counts: dict[str, int] = {}
    images = common.digits_batch(batch, size)  # real images: the sample digits, upscaled
    for arch in archs:
        torch.manual_seed(0)
        theirs = getattr(torchvision.models, arch)(num_classes=1000)
        ours = build_model(arch, num_classes=1000)
        ours.load_state_dict(theirs.state_dict(), strict=True)
        theirs.to(device)
        ours.to(device)
        for channels_last in (False, True):
            layout = torch.channels_last if channels_last else torch.contiguous_format
            theirs.to(memory_format=layout)
            ours.to(memory_format=layout)
            x = images.to(device).contiguous(memory_format=layout)
            for mode in args.mode:
                for precision in args.precision:
                    if mode == "fwd":
                        ours.eval()
                        theirs.eval()
                    else:
                        ours.train()
                        theirs.train()
                    step_ours = make_step(ours, x, mode, precision, device)
                    step_theirs = make_step(theirs, x, mode, precision, device)
                    timed(step_ours, warmup, device)  # warm-up (cuDNN autotuning, oneDNN primitives, allocator)
                    timed(step_theirs, warmup, device)
                    probe = 1 if args.quick else 3
                    per_iter = max(timed(step_ours, probe, device), timed(step_theirs, probe, device)) / probe
                    iters = max(10 if cuda and not args.quick else 1, min(1000, round(seconds / max(per_iter, 1e-9))))
                    result = common.interleave(
                        {
                            "ours": lambda s=step_ours, n=iters: batch * n / timed(s, n, device),
                            "torchvision": lambda s=step_theirs, n=iters: batch * n / timed(s, n, device),
                        },
                        args.rounds,
                    )
                    a, b = common.median(result["ours"]), common.median(result["torchvision"])
                    r = common.ratio(a, b)
                    worst = min(worst, r)
                    verdict = common.judge(result["ours"], result["torchvision"], TARGET)
                    counts[verdict] = counts.get(verdict, 0) + 1
                    rows.append(
                        [
                            arch,
                            mode,
                            precision,
                            "on" if channels_last else "off",
                            iters,
                            common.fmt(a),
                            common.fmt(b),
                            f"{r:.3f}",
                            common.spread(result["ours"] + result["torchvision"]),
                            verdict,
                        ]
                    )
                    print(
                        f"  {arch} {mode} {precision} channels_last={'on' if channels_last else 'off'}: "
                        f"ours {common.fmt(a)} img/s, torchvision {common.fmt(b)} img/s, ratio {r:.3f}",
                        file=sys.stderr,
                        flush=True,
                    )
        del ours, theirs
        if cuda:
            torch.cuda.empty_cache()
    common.print_table(headers, rows)
    print(
        f"lowest ratio {worst:.3f} (target >= {TARGET}); verdicts: "
        + ", ".join(f"{v} {n}" for v, n in sorted(counts.items()))
        + ". spread = fastest / slowest measurement of the row (both sides) - 1; verdict 'noise' = below the "
        "target but the two sides' measurements overlap (rerun with more --rounds), 'BELOW' = slower in every "
        "measurement."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Model speed: resnet_cli's ResNets and ViTs against torchvision's, same weights, timed with torch.utils.benchmark.

torchvision's randomly initialised state dict is loaded into ours (``strict=True``), so both networks do the
same arithmetic on the same batch (scikit-learn's digits, upscaled, three channels). Rows: forward (eval mode,
``inference_mode``) and forward + backward (train mode, ``mean(logits).backward()``), in fp32 and in bf16
autocast where the device has it. ``Timer.blocked_autorange`` times each side, alternating the sides for ``--rounds``
rounds (merged with ``Measurement.merge``); ``Compare`` prints the table.
Target: ours/torchvision >= 0.98 (ratio of the median times) on every row. ViTs (ours: SDPA; torchvision's:
nn.MultiheadAttention) run at --image-size, except patch-4 ones, which run at 32 px as on small datasets.

    python benchmarks/models.py [--device cuda] [--arch resnet50 vit_s_16 ...] [--quick] [--json]
"""

from __future__ import annotations

import _common
import torch
import torchvision
from sklearn.datasets import load_digits
from torch.utils import benchmark

from resnet_cli.engine.device import resolve_channels_last
from resnet_cli.models import build_model, family_of
from resnet_cli.models.registry import vit_spec

TARGET = 0.98


def digits_batch(batch: int, size: int) -> torch.Tensor:
    pixels = torch.from_numpy(load_digits().images[:batch]).float().div(16).unsqueeze(1)
    x = torch.nn.functional.interpolate(pixels, size=(size, size), mode="bicubic", align_corners=False)
    return ((x.clamp(0, 1) - 0.45) / 0.225).repeat(1, 3, 1, 1)


def twins(arch: str, size: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Ours and torchvision's ``arch`` at ``size`` px with torchvision's random weights in both."""
    torch.manual_seed(0)
    if family_of(arch) == "resnet":
        theirs = getattr(torchvision.models, arch)(num_classes=1000)
    else:
        spec, patch = vit_spec(arch)
        theirs = torchvision.models.VisionTransformer(
            size, patch, spec.num_layers, spec.num_heads, spec.hidden_dim, spec.mlp_dim, num_classes=1000
        )
    ours = build_model(arch, num_classes=1000, image_size=size)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def make_step(model: torch.nn.Module, x: torch.Tensor, mode: str, precision: str):
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step() -> None:
        with torch.inference_mode(mode == "fwd"), torch.autocast(x.device.type, dtype, enabled=dtype is not None):
            out = model(x)
        if mode == "fwd+bwd":
            out.float().mean().backward()
            model.zero_grad(set_to_none=True)

    return step


def main(argv: list[str] | None = None) -> int:
    bench = _common.Bench(__doc__, rounds=3)
    bench.parser.add_argument(
        "--arch",
        nargs="+",
        default=None,
        help="default resnet34 resnet50 vit_ti_16 vit_s_16 vit_ti_4 (quick: resnet18)",
    )
    bench.parser.add_argument("--batch-size", type=int, default=None, help="default 16 (quick 2)")
    bench.parser.add_argument("--image-size", type=int, default=None, help="default 64 on CPU, 224 on CUDA (quick 32)")
    bench.parser.add_argument("--channels-last", action="store_true", help="default: as training picks it")
    args = bench.parse(argv)
    device, cuda = args.device, args.device.type == "cuda"
    archs = args.arch or (["resnet18"] if args.quick else ["resnet34", "resnet50", "vit_ti_16", "vit_s_16", "vit_ti_4"])
    batch = args.batch_size or (2 if args.quick else 16)
    size = args.image_size or (32 if args.quick else 224 if cuda else 64)
    precisions = ["fp32"] + (["bf16"] if not cuda or torch.cuda.is_bf16_supported() else [])
    layout = (
        torch.channels_last if resolve_channels_last(args.channels_last or None, device) else torch.contiguous_format
    )
    min_run_time = 0.02 if args.quick else 3.0
    bench.say(f"batch {batch}, {size} px, {layout}; target ours/torchvision >= {TARGET}")

    measurements, rows = [], []
    for arch in archs:
        arch_size = 32 if family_of(arch) == "vit" and vit_spec(arch)[1] == 4 else size
        x = digits_batch(batch, arch_size).to(device, memory_format=layout)
        ours, theirs = twins(arch, arch_size)
        for model in (ours, theirs):
            model.to(device, memory_format=layout)
        for mode in ("fwd", "fwd+bwd"):
            for model in (ours, theirs):
                model.train(mode != "fwd")
            for precision in precisions:
                steps = {"resnet_cli": make_step(ours, x, mode, precision)}
                steps["torchvision"] = make_step(theirs, x, mode, precision)
                for step in steps.values():
                    step()  # warm-up: oneDNN primitives, cuDNN autotuning, the allocator
                runs: dict[str, list[benchmark.Measurement]] = {name: [] for name in steps}
                for _ in range(args.rounds):  # alternate the sides, so drift of the machine hits both
                    for name, step in steps.items():
                        timer = benchmark.Timer(
                            "step()",
                            globals={"step": step},
                            label=f"{arch}, batch {batch}, {arch_size} px",
                            sub_label=f"{mode} {precision}",
                            description=name,
                            num_threads=torch.get_num_threads(),
                        )
                        runs[name].append(timer.blocked_autorange(min_run_time=min_run_time / args.rounds))
                times = {name: benchmark.Measurement.merge(m)[0] for name, m in runs.items()}
                measurements += times.values()
                ratio = times["torchvision"].median / times["resnet_cli"].median
                rows.append([arch, mode, precision, batch / times["resnet_cli"].median,
                             batch / times["torchvision"].median, f"{ratio:.3f}"])  # fmt: skip
        del ours, theirs
    compare = benchmark.Compare(measurements)
    compare.trim_significant_figures()
    bench.say(str(compare))
    bench.table("models", ["arch", "mode", "precision", "ours img/s", "torchvision img/s", "ratio"], rows)
    for arch in archs:  # what --precision auto's probe measures on this machine (see benchmarks/precision.py)
        speed = {row[2]: row[3] for row in rows if row[:2] == [arch, "fwd+bwd"]}
        if "bf16" in speed:
            bench.say(f"{arch} fwd+bwd bf16/fp32 {speed['bf16'] / speed['fp32']:.2f}x")
    worst = min(float(row[-1]) for row in rows)
    bench.verdict(f"models ours/torchvision (lowest of {len(rows)} rows)", worst, TARGET)
    return bench.finish()


if __name__ == "__main__":
    raise SystemExit(main())

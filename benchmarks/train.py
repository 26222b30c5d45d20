"""Training speed: the project's loop (``resnet_cli.engine.train.fit``) against a minimal hand-written loop.

1. Overhead of ``fit``. Ours: one ``fit`` run of 2 epochs of ``--steps`` steps each (``max_steps_per_epoch``);
   its ``TrainResult.history[1].images_per_s`` (epoch 2, the steady state; ``fit`` times training steps only,
   data loading included, validation and checkpoints excluded). Baseline: the same model (``build_model``),
   the same data (``ManifestDataset`` + ``EpochBatchSampler`` + ``make_loader``, same workers, so data cost is
   identical), AdamW, CrossEntropyLoss, same batch size, precision, memory layout and number of steps, also a
   warm-up epoch then a timed epoch, timed the same way (from the loader's first fetch to the last step).
   Both sides are rebuilt every round and alternate (fit, loop, fit, loop, ...). Reported: overhead =
   1 - ours/baseline. Target: <= 5%. A third side, the loop plus fit's per-step reads of the loss and the
   accuracy (``float(loss)``, ``int(correct)``: a GPU synchronisation each), shows how much of any gap they
   explain.
2. Precision: ``--precision auto`` (what ``resolve_precision("auto", device)`` picks) and explicit bf16 against
   fp32, in the hand-written loop (interleaved epochs of one warm model per precision). The project's claim:
   auto (bf16 with AMX) is >= 2x fp32 on CPUs with AMX; without AMX auto stays fp32, and bf16/fp32 shows
   whether that is right.
3. Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` per side; on the CPU the process's peak RSS
   (``ru_maxrss``, process-wide: it covers everything this script did).
4. On CUDA (or with ``--model-only``): model-only training throughput over pre-made device tensors (a batch of
   real images; no data loading), ``build_model`` against ``torchvision.models``, same weights; on CUDA for fp32
   and for what auto picks (the loops of 1. are bound by data loading there, so precision is compared here).

Data: the sample digits upscaled to ``--image-size`` (default 32 px: greyscale, small-input stem, pad-and-crop
augmentation); above 64 px, 256 px RGB JPEGs written here (random resized crops). GPU anchor:

    python benchmarks/train.py --device cuda --arch 50 --image-size 224 --precision bf16 --channels-last
    python benchmarks/train.py            # CPU defaults: resnet18, 32 px, batch 32, 10 steps per epoch
    python benchmarks/train.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common
import torch
import torchvision
from torch import nn

from resnet_cli.config import ModelConfig, PreprocessConfig, SplitConfig, TrainConfig
from resnet_cli.data.dataset import EpochBatchSampler, ManifestDataset, make_loader
from resnet_cli.data.preprocess import resolve as resolve_preprocess
from resnet_cli.data.split import Manifest, make_split
from resnet_cli.data.transforms import train_transform
from resnet_cli.engine.device import cpu_has_amx, resolve_channels_last, resolve_precision
from resnet_cli.engine.train import default_workers, fit
from resnet_cli.models import build_model, canonical_arch

TARGET_OVERHEAD = 0.05
AMX_CLAIM = 2.0
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    dtype = _DTYPES.get(precision)
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return float("nan")


class HandLoop:
    """A minimal PyTorch training loop over the project's dataset classes; ``epoch(n)`` returns images/s."""

    def __init__(
        self,
        manifest: Manifest,
        pre: PreprocessConfig,
        model_config: ModelConfig,
        batch: int,
        steps: int,
        workers: int,
        precision: str,
        channels_last: bool,
        device: torch.device,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        seed: int = 0,
        bookkeeping: bool = False,
    ) -> None:
        torch.manual_seed(seed)
        self.device, self.precision, self.steps = device, precision, steps
        self.bookkeeping = bookkeeping  # read loss and accuracy back every step, as fit does (syncs on CUDA)
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
        m = model_config
        self.model = build_model(m.arch, m.num_classes, m.in_channels, m.small_input).to(device)
        self.model.to(memory_format=self.layout)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        self.criterion = nn.CrossEntropyLoss()
        rows = manifest.part("train")
        dataset = ManifestDataset(manifest.root, rows, manifest.classes, train_transform(pre), pre.in_channels)
        self.sampler = EpochBatchSampler(len(dataset), batch, seed, shuffle=True, train=True)
        self.loader = make_loader(dataset, self.sampler, workers, seed, pin_memory=device.type == "cuda")
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.loss_sum, self.correct = 0.0, 0

    def epoch(self, number: int) -> float:
        self.sampler.set_epoch(number)
        self.model.train()
        seen = 0
        common.sync(self.device)
        start = time.perf_counter()
        for step, (x, y) in enumerate(self.loader, start=1):
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.layout)
            y = y.to(self.device, non_blocking=True)
            with autocast(self.device, self.precision):
                logits = self.model(x)
            loss = self.criterion(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.bookkeeping:
                self.loss_sum += float(loss.detach()) * len(y)
                self.correct += int((logits.detach().argmax(1) == y).sum())
            seen += len(y)
            if step >= self.steps:
                break
        common.sync(self.device)
        return seen / (time.perf_counter() - start)


def model_only(
    args: argparse.Namespace,
    model_config: ModelConfig,
    precisions: list[str],
    channels_last: bool,
    device: torch.device,
) -> list[list[object]]:
    """Training steps over one pre-made device batch: build_model vs torchvision, same weights, per precision."""
    m = model_config
    theirs = getattr(torchvision.models, m.arch)(num_classes=m.num_classes)
    if m.in_channels != 3 or m.small_input:
        kernel, stride, pad = (3, 1, 1) if m.small_input else (7, 2, 3)
        theirs.conv1 = nn.Conv2d(m.in_channels, 64, kernel, stride, pad, bias=False)
        if m.small_input:
            theirs.maxpool = nn.Identity()
    ours = build_model(m.arch, m.num_classes, m.in_channels, m.small_input)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = common.digits_batch(args.batch_size, args.image_size, m.in_channels).to(device).contiguous(memory_format=layout)
    y = torch.arange(args.batch_size, device=device) % m.num_classes
    warmup, steps = (1, 2) if args.quick else (10, 30) if device.type == "cuda" else (2, 5)
    for model in (ours, theirs):
        model.to(device).to(memory_format=layout).train()

    def runner(model: nn.Module, precision: str):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
        criterion = nn.CrossEntropyLoss()
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

        def step() -> None:
            with autocast(device, precision):
                logits = model(x)
            loss = criterion(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        def measure() -> float:
            with common.Timer(device) as t:
                for _ in range(steps):
                    step()
            return args.batch_size * steps / t.seconds

        for _ in range(warmup):
            step()
        return measure

    rows = []
    fp32 = None
    for precision in precisions:
        result = common.interleave(
            {"ours": runner(ours, precision), "torchvision": runner(theirs, precision)}, args.rounds
        )
        a, b = common.median(result["ours"]), common.median(result["torchvision"])
        fp32 = a if precision == "fp32" else fp32
        rows.append(
            [
                m.arch,
                f"{args.image_size} px, batch {args.batch_size}",
                precision,
                "on" if channels_last else "off",
                steps,
                common.fmt(a),
                common.fmt(b),
                f"{common.ratio(a, b):.3f}",
                f"{common.ratio(a, fp32):.2f}x" if fp32 else "-",
            ]
        )
        print(f"  model-only {precision}: ours {a:.1f} img/s, torchvision {b:.1f} img/s", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser)
    parser.add_argument("--arch", default="18", help="architecture (default 18)")
    parser.add_argument("--image-size", type=int, default=32, help="px (default 32: digits, small-input stem)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 (--quick: 8)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per epoch (default 10; --quick 2)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default 0 on the CPU)")
    parser.add_argument("--precision", default="auto", help="of the fit-vs-loop comparison: auto, fp32, bf16, fp16")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--model-only", action=argparse.BooleanOptionalAction, default=None, help="default: on CUDA")
    parser.add_argument("--skip-precision", action="store_true", help="leave out the precision comparison")
    parser.add_argument("--jpegs", type=int, default=None, help="JPEGs written when --image-size > 64")
    args = parser.parse_args(argv)
    device = common.resolve_args(args)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # fit sets it too; the baseline must not run without it
    arch = canonical_arch(args.arch)
    args.batch_size = args.batch_size or (8 if args.quick else 32)
    steps = args.steps or (2 if args.quick else 10)
    workers = args.workers if args.workers is not None else (0 if not cuda else default_workers())
    precision = resolve_precision(args.precision, device)
    auto = resolve_precision("auto", device)
    channels_last = resolve_channels_last(args.channels_last, device)
    model_only_on = args.model_only if args.model_only is not None else cuda

    common.print_header(
        f"Training speed: resnet_cli.engine.train.fit vs a hand-written loop ({arch})",
        device,
        f"overhead = 1 - ours/baseline <= {100 * TARGET_OVERHEAD:.0f}%; --precision auto >= {AMX_CLAIM:.0f}x fp32 "
        "on CPUs with AMX (project claim)",
        [
            f"{args.image_size} px, batch {args.batch_size}, {steps} steps per epoch, workers {workers}, "
            f"precision {args.precision} -> {precision}, channels_last {'on' if channels_last else 'off'}; "
            f"{args.rounds} interleaved rounds, median per side",
        ],
    )
    with common.temp_dir("train") as tmp:
        root = Path(tmp) / "data"
        if args.image_size <= 64:
            per_class = 10 if args.quick else None
            n = common.write_upscaled_digits(root, args.image_size, per_class=per_class)
            source = f"{n} sample digits upscaled to {args.image_size} px (PNG, greyscale)"
        else:
            count = args.jpegs or max(4 * args.batch_size, int(args.batch_size * steps / 0.9) + args.batch_size)
            n = common.write_smooth_jpegs(root, count, size=256)
            source = f"{n} smooth 256 px RGB JPEGs"
        manifest = make_split(root, SplitConfig(val=0.1, seed=0)).manifest
        config = TrainConfig(
            data=str(root),
            arch=arch,
            out=str(Path(tmp) / "run"),
            epochs=2,
            batch_size=args.batch_size,
            image_size=args.image_size,
            workers=workers,
            device=str(device),
            precision=precision,
            channels_last=channels_last,
            max_steps_per_epoch=steps,
            seed=0,
        )
        pre, small = resolve_preprocess(config, manifest.part("train"))
        model_config = ModelConfig(arch, len(manifest.classes), pre.in_channels, small)
        print(
            f"data: {source}; {len(manifest.part('train'))} train / {len(manifest.part('val'))} val; "
            f"augment {pre.augment}, {pre.in_channels} channel(s), small-input stem {'on' if small else 'off'}"
        )
        print(flush=True)

        peaks: dict[str, list[float]] = {"fit": [], "loop": [], "loop + reads": []}

        def ours() -> float:
            reset_peak(device)
            result = fit(config, force=True)
            peaks["fit"].append(peak_mib(device))
            if result.config["preprocess"] != pre.to_dict() or result.config["model"] != model_config.to_dict():
                raise SystemExit("fit resolved a different pipeline than the baseline uses")
            return result.history[1].images_per_s

        def baseline(bookkeeping: bool = False) -> float:
            reset_peak(device)
            loop = HandLoop(
                manifest,
                pre,
                model_config,
                args.batch_size,
                steps,
                workers,
                precision,
                channels_last,
                device,
                bookkeeping=bookkeeping,
            )
            loop.epoch(1)  # warm-up, like fit's first epoch
            value = loop.epoch(2)
            del loop
            peaks["loop + reads" if bookkeeping else "loop"].append(peak_mib(device))
            return value

        def show(r: int, values: dict[str, float]) -> None:
            text = ", ".join(f"{k} {v:.1f} img/s" for k, v in values.items())
            print(f"  round {r + 1}: {text}", file=sys.stderr, flush=True)

        sides = {"fit": ours, "loop": baseline, "loop + reads": lambda: baseline(bookkeeping=True)}
        result = common.interleave(sides, args.rounds, show)
        a, b = common.median(result["fit"]), common.median(result["loop"])
        c = common.median(result["loop + reads"])
        overhead = 1 - common.ratio(a, b)
        both = result["fit"] + result["loop"]
        verdict = common.judge(result["fit"], result["loop"], 1 - TARGET_OVERHEAD)
        print("## fit vs hand-written loop (steady state: epoch 2, training steps only)")
        print()
        memory = "peak CUDA MiB" if cuda else "peak RSS MiB (process)"
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        common.print_table(
            ["loop", "precision", "img/s (median)", "rounds", memory],
            [
                ["fit (resnet_cli)", precision, common.fmt(a), " / ".join(f"{v:.1f}" for v in result["fit"]),
                 common.fmt(max(peaks["fit"]), 0) if cuda else common.fmt(rss, 0)],
                ["hand-written loop (baseline)", precision, common.fmt(b),
                 " / ".join(f"{v:.1f}" for v in result["loop"]),
                 common.fmt(max(peaks["loop"]), 0) if cuda else "(same process)"],
                ["loop + per-step loss/accuracy reads", precision, common.fmt(c),
                 " / ".join(f"{v:.1f}" for v in result["loop + reads"]),
                 common.fmt(max(peaks["loop + reads"]), 0) if cuda else "(same process)"],
            ],
        )  # fmt: skip
        print(
            f"overhead 1 - ours/baseline = {100 * overhead:+.1f}% (target <= {100 * TARGET_OVERHEAD:.0f}%): "
            f"{'met' if overhead <= TARGET_OVERHEAD else 'not met'} (verdict {verdict}); spread of fit and baseline "
            f"rounds {common.spread(both)}."
        )
        print(
            f"diagnostic: the loop with fit's per-step float(loss) and int(correct) reads runs at "
            f"{common.ratio(c, b):.3f}x the baseline (these reads synchronise with the GPU every step)."
        )
        if not cuda:
            print("peak RSS is ru_maxrss of this whole process (all rounds of both sides), not per side.")
        print(flush=True)

        if cuda and not args.skip_precision:
            print(
                "## precision: on CUDA the loops above are bound by data loading; fp32 vs "
                f"{auto} (auto) is compared model-only below"
            )
            print()
        if not cuda and not args.skip_precision:
            candidates = ["fp32", *dict.fromkeys(p for p in (auto, "bf16") if p != "fp32")]
            loops = {
                p: HandLoop(manifest, pre, model_config, args.batch_size, steps, workers, p, channels_last, device)
                for p in candidates
            }
            for loop in loops.values():
                loop.epoch(1)
            epochs: dict[str, int] = {}

            def timed_epoch(p: str) -> float:
                epochs[p] = epochs.get(p, 1) + 1
                return loops[p].epoch(epochs[p])

            prec = common.interleave({p: (lambda p=p: timed_epoch(p)) for p in candidates}, args.rounds)
            base = common.median(prec["fp32"])
            rows = []
            for p in candidates:
                v = common.median(prec[p])
                label = p + (" (= auto)" if p == auto else "")
                rows.append([label, common.fmt(v), f"{common.ratio(v, base):.2f}x"])
            if auto == "fp32":
                rows[0][0] = "fp32 (= auto)"
            print("## precision in the hand-written loop")
            print()
            common.print_table(["precision", "img/s (median)", "vs fp32"], rows)
            amx = cpu_has_amx()
            if cuda:
                print(f"--precision auto resolves to {auto} on this GPU.")
            elif amx:
                speed = common.ratio(common.median(prec[auto]), base)
                print(
                    f"CPU has AMX: auto resolves to {auto}, {speed:.2f}x fp32 (claim >= {AMX_CLAIM:.0f}x: "
                    f"{'met' if speed >= AMX_CLAIM else 'not met'})."
                )
            else:
                speed = common.ratio(common.median(prec["bf16"]), base)
                print(
                    f"CPU without AMX: auto resolves to {auto}, so the >= {AMX_CLAIM:.0f}x claim does not apply here; "
                    f"explicit bf16 runs at {speed:.2f}x fp32, which "
                    f"{'supports' if speed <= 1.0 else 'does not support'} staying in fp32 without AMX."
                )
            print(flush=True)
            del loops

        if model_only_on:
            precisions = [precision]
            if cuda and not args.skip_precision:
                precisions = list(dict.fromkeys(["fp32", auto, precision]))
            rows = model_only(args, model_config, precisions, channels_last, device)
            print("## model-only training throughput (pre-made device tensors, no data loading; AdamW step included)")
            print()
            common.print_table(
                [
                    "arch",
                    "input",
                    "precision",
                    "channels_last",
                    "steps",
                    "ours img/s",
                    "torchvision img/s",
                    "ratio",
                    "ours vs fp32",
                ],
                rows,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training speed: ``fit`` against a bare PyTorch loop (interleaved A/B), and host syncs per training step.

1. Overhead. A round runs ``fit`` (2 epochs of ``--steps`` steps; epoch 2's ``images_per_s``, which times the
   training steps with their data loading), then a bare loop with the same model, data pipeline, AdamW, loss,
   batch, precision and layout (a warm-up epoch, then a timed one). Rounds alternate in one process; reported:
   the ratio of the medians and the range of the per-round ratios. Target: fit/bare >= 0.95 (overhead <= 5%).
2. Host syncs per step. A first, untimed ``fit`` runs with ``torch.Tensor``'s Python-level reads wrapped
   (:data:`READS`: ``.item()``, ``.tolist()``, ``float(t)``, ...; on a GPU each waits for the device), counted
   over epoch 2's training steps by the first calling frame in this repository. Reads in the project's code are
   the host syncs a GPU run pays (on the CPU nothing waits, but the code path and count are the same); reads by
   the data loader and inside libraries (AdamW's step counters, CPU tensors by design) are listed apart. Syncs
   without a Python call (``.to("cpu")``, ``nonzero``) are not seen, so on CUDA the run also counts the
   warnings of ``torch.cuda.set_sync_debug_mode("warn")``: every synchronising CUDA call.

    python benchmarks/train.py                # CPU defaults: resnet18, 32 px digits, batch 32, 10 steps
    python benchmarks/train.py --device cuda --arch 50 --image-size 224 --batch-size 64 --workers 8
    python benchmarks/train.py --quick        # smoke run
"""

from __future__ import annotations

import resource
import statistics
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import _common
import torch

from resnet_cli.config import ModelConfig, SplitConfig, TrainConfig
from resnet_cli.data.dataset import EpochBatchSampler, ManifestDataset, make_loader
from resnet_cli.data.preprocess import resolve as resolve_preprocess
from resnet_cli.data.split import make_split
from resnet_cli.data.transforms import train_transform
from resnet_cli.engine.callbacks import Callback
from resnet_cli.engine.device import resolve_channels_last, resolve_precision
from resnet_cli.engine.recipe import resolve_recipe
from resnet_cli.engine.train import fit
from resnet_cli.models import build_model

TARGET = 0.95
REPO = str(Path(__file__).resolve().parent.parent) + "/"
# Python-level ways to bring a tensor's value into Python: on a GPU each waits for the device.
READS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__")


class TensorReads(Callback):
    """While entered, counts calls of :data:`READS` made during epoch ``epoch``'s training steps, by site."""

    def __init__(self, epoch: int, device: torch.device) -> None:
        self.epoch, self.device = epoch, device
        self.sites: Counter[str] = Counter()
        self.counting, self.depth, self.steps, self.cuda_syncs = False, 0, 0, 0
        self.log: list[warnings.WarningMessage] = []

    def __enter__(self) -> TensorReads:
        self.saved = {name: torch.Tensor.__dict__.get(name) for name in READS}
        for name in READS:
            setattr(torch.Tensor, name, self._wrap(getattr(torch.Tensor, name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self.saved.items():
            if original is None:
                delattr(torch.Tensor, name)  # inherited from the C base class again
            else:
                setattr(torch.Tensor, name, original)

    def _wrap(self, method):
        def read(tensor, *args, **kwargs):
            if self.counting and not self.depth:
                self.sites[site(sys._getframe(1))] += 1
            self.depth += 1  # a read implemented with another read counts once
            try:
                return method(tensor, *args, **kwargs)
            finally:
                self.depth -= 1

        return read

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        if epoch == self.epoch:
            self.counting, self.steps, self.first = True, steps, len(self.log)
            if self.device.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")

    def on_validation_start(self, epoch: int, steps: int) -> None:
        if self.counting:
            self.counting = False
            if self.device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
                self.cuda_syncs = sum("synchroniz" in str(w.message) for w in self.log[self.first :])


def site(frame) -> str:
    """Who read: ``path:line`` of the first frame in this repository, and the library it went through, if any."""
    frames = []
    while frame is not None:
        frames.append((frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
        frame = frame.f_back
    if any("/torch/utils/data/" in name for name, _, _ in frames):
        return "data loading (CPU tensors: no device sync)"
    via = ""
    for name, line, code in frames:
        if name.startswith(REPO) and "/site-packages/" not in name:
            return f"{via}{name.removeprefix(REPO)}:{line}"
        via = via or f"inside {name.rpartition('site-packages/')[2]} ({code}), called from "
    return "outside this repository"


def bare_loop(config: TrainConfig, manifest, pre, model_config: ModelConfig, device: torch.device) -> float:
    """Images per second of epoch 2 of a plain PyTorch loop over the project's dataset classes."""
    torch.manual_seed(config.seed)
    precision = resolve_precision(config.precision, device)
    layout = torch.channels_last if resolve_channels_last(config.channels_last, device) else torch.contiguous_format
    m = model_config
    model = build_model(m.arch, m.num_classes, m.in_channels, m.small_input).to(device, memory_format=layout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    rows = manifest.part("train")
    dataset = ManifestDataset(manifest.root, rows, manifest.classes, train_transform(pre), pre.in_channels)
    sampler = EpochBatchSampler(len(dataset), config.batch_size, config.seed, shuffle=True, train=True)
    loader = make_loader(dataset, sampler, config.workers, config.seed, pin_memory=device.type == "cuda")
    model.train()

    def epoch(number: int) -> int:
        sampler.set_epoch(number)
        seen = 0
        for step, (x, y) in enumerate(loader, start=1):
            x = x.to(device, non_blocking=True).contiguous(memory_format=layout)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits.float(), y.to(device, non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            seen += len(y)
            if step >= config.max_steps_per_epoch:
                break
        return seen

    epoch(1)  # warm-up, as fit's first epoch
    return _common.timed(lambda: epoch(2), device)


def main(argv: list[str] | None = None) -> int:
    bench = _common.Bench(__doc__, rounds=5)
    bench.parser.add_argument("--arch", default="resnet18")
    bench.parser.add_argument("--image-size", type=int, default=None, help="px (default 32: digits; quick 8)")
    bench.parser.add_argument("--batch-size", type=int, default=None, help="default 32 (quick 8)")
    bench.parser.add_argument("--steps", type=int, default=None, help="training steps per epoch (default 10; quick 2)")
    bench.parser.add_argument("--workers", type=int, default=0, help="loader workers (default 0)")
    bench.parser.add_argument("--precision", default="auto")
    args = bench.parse(argv)
    device = args.device
    args.image_size = args.image_size or (8 if args.quick else 32)
    batch, steps = args.batch_size or (8 if args.quick else 32), args.steps or (2 if args.quick else 10)
    with tempfile.TemporaryDirectory(prefix="resnet-bench-train-") as tmp:
        root = Path(tmp) / "data"
        if args.image_size <= 64:
            images = _common.write_digits_at(root, args.image_size, per_class=5 if args.quick else None)
        else:
            images = _common.write_noise(root, max(4 * batch, round(1.2 * batch * steps)), 256)
        manifest = make_split(root, SplitConfig(val=0.2, seed=0)).manifest
        config = resolve_recipe(TrainConfig(
            data=str(root), arch=args.arch, out=str(Path(tmp) / "run"), epochs=2, batch_size=batch,
            image_size=args.image_size, workers=args.workers, device=str(device), precision=args.precision,
            max_steps_per_epoch=steps, seed=0,
        ))  # fmt: skip  # the family's recipe (AdamW, lr, weight decay), as fit resolves it
        pre, small = resolve_preprocess(config, manifest.part("train"))
        model_config = ModelConfig(args.arch, len(manifest.classes), pre.in_channels, small)
        bench.say(f"{args.arch}, {images} images at {args.image_size} px, batch {batch}, {steps} steps per epoch, "
                  f"workers {args.workers}, precision {resolve_precision(args.precision, device)}")  # fmt: skip

        reads = TensorReads(epoch=2, device=device)  # first, untimed: it also warms up both sides
        with warnings.catch_warnings(record=True) as reads.log, reads:
            warnings.simplefilter("always")
            fit(config, force=True, callbacks=[reads])

        def run_fit() -> float:
            result = fit(config, force=True)
            if result.config["preprocess"] != pre.to_dict() or result.config["model"] != model_config.to_dict():
                raise SystemExit("fit resolved another pipeline than the bare loop uses")
            return result.history[1].images_per_s

        sides = {"fit": run_fit, "bare": lambda: bare_loop(config, manifest, pre, model_config, device)}
        result = _common.interleave(sides, args.rounds)
        ratio, spread = _common.compare(result["fit"], result["bare"])
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows = [[name, statistics.median(v), " / ".join(f"{x:.1f}" for x in v)] for name, v in result.items()]
        bench.table("train", ["loop", "img/s (median)", "rounds"], rows)
        bench.say(f"peak RSS of the process (both sides): {rss:,.0f} MiB")
        bench.verdict("fit/bare", ratio, TARGET, spread)

        per_step = {name: n / reads.steps for name, n in reads.sites.most_common()}
        bench.table("reads", ["read site (epoch 2, training steps)", "per step"],
                    [[name, f"{n:g}"] for name, n in per_step.items()])  # fmt: skip
        ours = sum(n for name, n in per_step.items() if not name.startswith(("inside", "data", "outside")))
        bench.results["host_syncs_per_step"] = ours
        bench.say(f"host syncs per step (reads in the project's code): {ours:g}")
        if device.type == "cuda":
            bench.results["cuda_syncs_per_step"] = reads.cuda_syncs / reads.steps
            bench.say(f"synchronising CUDA calls per step (set_sync_debug_mode): {reads.cuda_syncs / reads.steps:g}")
    return bench.finish()


if __name__ == "__main__":
    raise SystemExit(main())

"""``--precision auto``: the probe's choice against the fastest candidate, measured afterwards in the same process.

For each architecture (ResNet-18 with the small-input stem and ViT-Ti/4, both at 32 px, as on small datasets)
the probe (``resnet_cli.engine.speed.choose_placement``, no cache) picks a precision and memory format. Then
every candidate it considered is timed again with the same routine (``speed.measure``, training steps at the
run's batch), for longer: a warm-up each, then ``--rounds`` rounds of ``--steps`` steps, the candidates taking
turns; median img/s per candidate. Reported: the choice's img/s over the fastest candidate's. Target >= 0.95
(the probe keeps fp32 unless a reduced precision beats it by 3%, so a near-tie can cost up to that).

    python benchmarks/precision.py [--arch resnet18 vit_ti_4] [--batch-size 64] [--quick] [--json]
"""

from __future__ import annotations

import functools
import statistics
import time

import _common
import torch

from resnet_cli.engine import speed
from resnet_cli.models import build_model, family_of

TARGET = 0.95
SIZE = 32


def main(argv: list[str] | None = None) -> int:
    bench = _common.Bench(__doc__, rounds=5)
    bench.parser.add_argument("--arch", nargs="+", default=None, help="default resnet18 vit_ti_4 (quick: resnet18)")
    bench.parser.add_argument("--batch-size", type=int, default=None, help="the run's batch (default 64; quick 8)")
    bench.parser.add_argument("--steps", type=int, default=None, help="timed steps per round (default 3; quick 1)")
    args = bench.parse(argv)
    device = args.device
    archs = args.arch or (["resnet18"] if args.quick else ["resnet18", "vit_ti_4"])
    batch = args.batch_size or (8 if args.quick else 64)
    steps = args.steps or (1 if args.quick else 3)
    bench.say(f"batch {batch}, {SIZE} px, 10 classes; {args.rounds} rounds of {steps} steps per candidate")

    rows: list[list[object]] = []
    ratios = [compare(bench, arch, device, batch, steps, args.rounds, rows) for arch in archs]
    bench.table("precision", ["arch", "candidate", "img/s (fwd+bwd)", "note"], rows)
    bench.verdict(f"precision auto/fastest (lowest of {len(archs)} archs)", min(ratios), TARGET)
    return bench.finish()


def compare(
    bench: _common.Bench, arch: str, device: torch.device, batch: int, steps: int, rounds: int, rows: list[list[object]]
) -> float:
    """Probe ``arch``, time every candidate again, add the rows; return the choice's img/s over the fastest's."""
    small = family_of(arch) == "resnet"

    def build() -> torch.nn.Module:
        return build_model(arch, 10, 3, small, image_size=SIZE)

    shape = (batch, 3, SIZE, SIZE)
    start = time.perf_counter()
    probe = speed.choose_placement(build, shape, 10, device, "auto", None, arch=arch, use_cache=False)
    probe_s = time.perf_counter() - start
    bench.say(f"{arch}: probe {probe_s:.1f} s: {probe.describe()}")
    candidates = [(c.precision, c.channels_last) for c in probe.candidates] or [(probe.precision, probe.channels_last)]
    torch.manual_seed(0)
    model = build()

    def side(precision: str, channels_last: bool, warmup: int = 0) -> float:
        found = speed.measure(model, shape, 10, device, precision, channels_last, train=True, steps=steps,
                              warmup=warmup)  # fmt: skip
        return found.images_per_s

    for candidate in candidates:
        side(*candidate, warmup=1)
    sides = {_name(p, cl): functools.partial(side, p, cl) for p, cl in candidates}
    medians = {name: statistics.median(values) for name, values in _common.interleave(sides, rounds).items()}
    chosen = _name(probe.precision, probe.channels_last)
    fastest = max(medians, key=medians.__getitem__)
    ratio = medians[chosen] / medians[fastest]
    for name, value in medians.items():
        rows.append([arch, name, value, "auto" if name == chosen else ("fastest" if name == fastest else "")])
    rows.append([arch, f"auto/fastest ({chosen} vs {fastest})", f"{ratio:.3f}", f"probe {probe_s:.1f} s"])
    return ratio


def _name(precision: str, channels_last: bool) -> str:
    return f"{precision}{'/cl' if channels_last else ''}"


if __name__ == "__main__":
    raise SystemExit(main())

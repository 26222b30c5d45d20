"""``resnet bench``: forward and training speed and peak memory per architecture and precision on this machine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from resnet_cli.cli import console
from resnet_cli.cli.options import ARCH_CHOICES, PRECISION_CHOICES, BatchSize, Device, Json, Quiet, complete_from

if TYPE_CHECKING:  # torch stays unimported until a command runs
    from resnet_cli.engine.speed import BenchResult, Measurement


def bench(
    arch: Annotated[
        list[str] | None,
        typer.Option(
            "--arch",
            "-a",
            help="Architecture to time (repeat it): 18, 34, 50, 101, 152, or a ViT such as vit-s/16 [default: 18].",
            autocompletion=complete_from(*ARCH_CHOICES),
            show_default=False,
        ),
    ] = None,
    image_size: Annotated[int, typer.Option("--image-size", help="Input side in px.")] = 224,
    in_channels: Annotated[int, typer.Option("--in-channels", help="1 for greyscale, 3 for RGB.")] = 3,
    num_classes: Annotated[int, typer.Option("--num-classes", help="Classifier outputs.")] = 1000,
    batch_size: BatchSize = 32,
    precision: Annotated[
        list[str] | None,
        typer.Option(
            "--precision",
            help="fp32, bf16 or fp16 (repeat it); auto: every precision --precision auto chooses among here "
            "[default: auto].",
            autocompletion=complete_from(*PRECISION_CHOICES),
            show_default=False,
        ),
    ] = None,
    channels_last: Annotated[
        bool | None,
        typer.Option(
            "--channels-last/--no-channels-last", help="Memory format [default: on for CUDA].", show_default=False
        ),
    ] = None,
    small_input: Annotated[
        bool | None,
        typer.Option(
            "--small-input/--no-small-input",
            help="ResNets' 3x3 stride-1 stem [default: as train picks it, on at <= 64 px].",
            show_default=False,
        ),
    ] = None,
    device: Device = "auto",
    steps: Annotated[int, typer.Option("--steps", help="Timed steps per row and mode, after the warm-up.")] = 10,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed steps first (kernels, autotuning).")] = 2,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Time forward passes and training steps (forward + backward + SGD step) of random batches, per architecture
    and precision, with the timing routine --precision auto uses; show images/s and peak memory."""
    from resnet_cli.engine.speed import bench as run_bench

    result = run_bench(
        arch or ["18"],
        image_size=image_size,
        in_channels=in_channels,
        num_classes=num_classes,
        batch_size=batch_size,
        precisions=precision or ["auto"],
        channels_last=channels_last,
        small_input=small_input,
        device=device,
        steps=steps,
        warmup=warmup,
        on_start=lambda: console.info_line("timing (this takes a while for large networks or many steps) ...", quiet),
    )
    if json_out:
        console.print_json(result.to_dict())
        return
    _render(result)


def _render(result: BenchResult) -> None:
    from rich.table import Table

    title = (
        f"{result.device}: batch {result.batch_size}, {result.in_channels}x{result.image_size}x{result.image_size}, "
        f"{result.num_classes} classes, {result.steps} timed steps after {result.warmup}"
    )
    table = Table(title=title, title_justify="left")
    for column in ("arch", "precision", "layout", "fwd img/s", "fwd peak mem", "fwd+bwd img/s", "fwd+bwd peak mem"):
        table.add_column(column, justify="right" if "img/s" in column or "mem" in column else "left")
    for row in result.rows:
        layout = "channels_last" if row.channels_last else "contiguous"
        table.add_row(
            row.arch,
            row.precision,
            layout,
            f"{row.forward.images_per_s:,.1f}",
            _memory(row.forward),
            f"{row.train.images_per_s:,.1f}",
            _memory(row.train),
        )
    out = console.stdout_console()
    out.print(table)
    sources = {m.memory_source for row in result.rows for m in (row.forward, row.train)}
    if "cpu peak rss growth" in sources:
        out.print("peak mem on the CPU: growth of the process's peak resident size during the row (0: no new peak)")
    for arch, chosen in result.auto.items():
        out.print(f"{arch}: --precision auto would train in {chosen} here (fwd+bwd)")


def _memory(measurement: Measurement) -> str:
    size = measurement.peak_memory_bytes
    if size is None:
        return "n/a"
    return f"{size / 2**20:,.0f} MiB"


def register(app: typer.Typer) -> None:
    examples = (
        "resnet bench --arch 18 --arch 50 --image-size 224 --batch-size 32",
        "resnet bench --arch vit-s/16 --precision fp32 --precision bf16",
        "resnet bench --arch 18 --image-size 32 --steps 5 --json",
    )
    app.command(epilog="Examples:\n\n" + "\n\n".join(examples))(bench)

"""``resnet summary``: the layer table of an architecture or of a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from resnet_cli.cli import console
from resnet_cli.cli.options import ARCH_CHOICES, Json, Quiet, complete_from

if TYPE_CHECKING:  # torch stays unimported until a command runs
    from resnet_cli.models.summary import ArchRow, ModelSummary

#: ViT spellings offered by shell completion, beside the ResNets' (the registry accepts more; see --list).
VIT_CHOICES = tuple(f"vit-{size}/{patch}" for size in ("ti", "s", "b", "l") for patch in (2, 4, 8, 16, 32))


def summary(
    target: Annotated[
        Path | None,
        typer.Argument(
            metavar="RUN_OR_WEIGHTS",
            help="Run folder, .pt checkpoint or .safetensors to describe (instead of --arch).",
            show_default=False,
        ),
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch",
            "-a",
            help="18, 34, 50, 101, 152, or a ViT such as vit-s/16 (see --list) [default: 50].",
            autocompletion=complete_from(*ARCH_CHOICES, *VIT_CHOICES),
            show_default=False,
        ),
    ] = None,
    list_all: Annotated[
        bool,
        typer.Option(
            "--list",
            help="One table of every architecture with its parameters and MACs at --image-size (to pick "
            "parameter- or MAC-matched pairs).",
        ),
    ] = False,
    image_size: Annotated[
        int | None,
        typer.Option(
            "--image-size",
            help="Input side in px; a ViT is built for it [default: 224, or the run's].",
            show_default=False,
        ),
    ] = None,
    num_classes: Annotated[int, typer.Option("--num-classes", help="Classifier outputs.")] = 1000,
    in_channels: Annotated[int, typer.Option("--in-channels", help="1 for greyscale, 3 for RGB.")] = 3,
    small_input: Annotated[
        bool | None,
        typer.Option(
            "--small-input/--no-small-input",
            help="ResNets: 3x3 stride-1 stem, no max-pool [default: on at <= 64 px, as train and --list].",
            show_default=False,
        ),
    ] = None,
    depth: Annotated[int, typer.Option("--depth", help="1: stem and stages, 2: blocks, 3: every layer.")] = 2,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch dimension of the shapes shown.")] = 1,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Show each layer's output shape, parameters and multiply-accumulates, with totals; or, with --list, every
    architecture's parameters and MACs."""
    from resnet_cli.config import ModelConfig
    from resnet_cli.models.summary import list_architectures, summarize

    if list_all:
        if target is not None:
            from resnet_cli.errors import ConfigError

            raise ConfigError(f"--list describes every architecture: leave out {target}, or drop --list")
        size = image_size if image_size is not None else 224
        rows = list_architectures(size, in_channels=in_channels, num_classes=num_classes)
        if json_out:
            document = {"image_size": size, "in_channels": in_channels, "num_classes": num_classes}
            console.print_json({**document, "architectures": [row.to_dict() for row in rows]})
            return
        _render_list(rows, size, in_channels, num_classes)
        return
    if target is not None and arch is not None:
        from resnet_cli.errors import ConfigError

        raise ConfigError(f"{target} has its own architecture: leave out --arch {arch}, or the path")
    if target is not None:
        from resnet_cli.io.weights import load_weights

        weights = load_weights(target)
        if weights.note:
            console.warning_line(weights.note)
        console.info_line(f"weights: {weights.describe()}", quiet)
        config = weights.model_config
        # A ViT is built for one size (its position embeddings): the run's, unless --image-size asks for another.
        size = image_size if image_size is not None else (config.image_size or weights.preprocess.image_size)
    else:
        from resnet_cli.models.registry import default_small_input

        size = image_size if image_size is not None else 224
        name = arch or "50"
        if small_input is None:  # the stem train would pick, as --list shows
            small_input = default_small_input(name, size)
        config = ModelConfig(arch=name, num_classes=num_classes, in_channels=in_channels, small_input=small_input)
    result = summarize(config, image_size=size, depth=depth, batch_size=batch_size)
    if json_out:
        console.print_json(result.to_dict())
        return
    _render(result)


def _render(result: ModelSummary) -> None:
    from rich.table import Table

    m = result.model
    title = f"{m.arch}  input {tuple(result.input_shape)}  classes {m.num_classes}" + (
        "  small-input stem" if m.small_input else ""
    )
    table = Table(title=title, title_justify="left")
    table.add_column("layer")
    table.add_column("type")
    table.add_column("output shape")
    table.add_column("params", justify="right")
    table.add_column("MACs", justify="right")
    for row in result.rows:
        indent = "  " * (row.depth - 1)
        table.add_row(indent + row.name, row.type, str(list(row.output_shape)), f"{row.params:,}", _human(row.macs))
    table.add_section()
    table.add_row("total", "", "", f"{result.total_params:,}", _human(result.total_macs))
    out = console.stdout_console()
    out.print(table)
    out.print(
        f"parameters {result.total_params:,} (trainable {result.trainable_params:,})   "
        f"MACs {result.total_macs / 1e9:.3f} G (FLOPs {2 * result.total_macs / 1e9:.3f} G)   "
        f"size {result.size_mb:.1f} MB (float32 parameters and buffers)"
    )


def _render_list(rows: list[ArchRow], size: int, in_channels: int, num_classes: int) -> None:
    from rich.table import Table

    title = f"every architecture at {size} px, {in_channels} channel(s), {num_classes} classes (MACs per image)"
    table = Table(title=title, title_justify="left")
    for column in ("arch", "name", "family", "params", "MACs", "note"):
        table.add_column(column, justify="right" if column in ("params", "MACs") else "left")
    for row in rows:
        if row.params is None or row.macs is None:
            table.add_row(row.arch, row.display_name, row.family, "n/a", "n/a", row.note)
        else:
            note = "small-input stem" if row.small_input else ""
            table.add_row(row.arch, row.display_name, row.family, f"{row.params / 1e6:.1f} M", _human(row.macs), note)
    console.stdout_console().print(table)


def _human(n: int) -> str:
    if n == 0:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def register(app: typer.Typer) -> None:
    examples = (
        "resnet summary --arch 50",
        "resnet summary --arch 34 --image-size 32 --small-input --depth 1",
        "resnet summary --arch vit-s/4 --image-size 32",
        "resnet summary --list --image-size 32",
        "resnet summary runs/r34 --json",
    )
    # Markdown help: a blank line between examples keeps each on its own line.
    app.command(epilog="Examples:\n\n" + "\n\n".join(examples))(summary)

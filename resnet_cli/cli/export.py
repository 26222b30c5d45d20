"""``resnet export``: safetensors (default), ONNX or TorchScript."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from resnet_cli.cli import console
from resnet_cli.cli.options import Force, Json, Quiet, UseEma, complete_from

#: The values of --format and --dtype (resnet_cli.engine.export's EXPORT_FORMATS and DTYPES, which import torch).
FORMAT_CHOICES = ("safetensors", "onnx", "torchscript")
DTYPE_CHOICES = ("fp32", "bf16", "fp16")


def export(
    target: Annotated[
        Path,
        typer.Argument(
            metavar="RUN_OR_CHECKPOINT",
            help="Run folder (uses best.pt), .pt checkpoint or .safetensors.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Output file [default: RUN/model.safetensors, .onnx or .torchscript.pt; model-raw.* for "
            "--no-ema on an --ema run].",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", "-f", help="safetensors, onnx or torchscript.", autocompletion=complete_from(*FORMAT_CHOICES)
        ),
    ] = "safetensors",
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype", help="fp32, bf16 or fp16 (safetensors only).", autocompletion=complete_from(*DTYPE_CHOICES)
        ),
    ] = "fp32",
    data: Annotated[
        Path | None,
        typer.Option("--data", "-d", help="Data folder for the ONNX/TorchScript parity check.", show_default=False),
    ] = None,
    ema: UseEma = True,
    force: Force = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Write the weights with their architecture, classes and preprocessing; prints the file's SHA-256.

    ONNX and TorchScript exports are run on sample images and compared with the checkpoint first. Inside a
    run folder an earlier export is regenerated freely; a file the tool did not write needs --force.
    """
    from resnet_cli.engine.export import export as run_export

    result = run_export(target, out=out, fmt=fmt, dtype=dtype, force=force, data=data, ema=ema)
    if result.note:
        console.warning_line(result.note)
    if json_out:
        console.print_json(result.to_dict())
        return
    console.info_line(f"{result.format} ({result.dtype}) of {result.weights}, {result.size_bytes / 1e6:.1f} MB", quiet)
    if result.parity:
        p = result.parity
        console.info_line(
            f"parity on {p['inputs']}: largest logit difference {p['max_abs_diff']:.2e}, "
            f"top-1 agreement {p['top1_agreement']:.0%}",
            quiet,
        )
    console.info_line(f"sha256 {result.sha256}", quiet)
    console.print_path(result.path)


def register(app: typer.Typer) -> None:
    examples = (
        "resnet export runs/r34",
        "resnet export runs/r34 --format onnx",
        "resnet export runs/r34/best.pt --dtype bf16 --out r34-bf16.safetensors",
    )
    # Markdown help: a blank line between examples keeps each on its own line.
    app.command(epilog="Examples:\n\n" + "\n\n".join(examples))(export)

"""``resnet predict``: top-k classes for image files or folders."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from resnet_cli.cli import console
from resnet_cli.cli.options import Device, InferencePrecision, Json, Quiet, UseEma

if TYPE_CHECKING:  # torch stays unimported until a command runs
    from resnet_cli.engine.predict import PredictResult


def predict(
    weights: Annotated[
        Path,
        typer.Argument(
            metavar="WEIGHTS",
            help="Run folder, .pt checkpoint, .safetensors export or .onnx export (needs the [onnx] extra).",
            show_default=False,
        ),
    ],
    inputs: Annotated[
        list[Path], typer.Argument(metavar="IMAGE_OR_DIR", help="Image files or folders.", show_default=False)
    ],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Classes shown per image.")] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images per batch.")] = 64,
    device: Device = "auto",
    precision: InferencePrecision = "auto",
    ema: UseEma = True,
    json_out: Json = False,
    csv_out: Annotated[
        bool, typer.Option("--csv", help="CSV on stdout: path, then class/probability pairs, error.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Classify images with the preprocessing recorded at training time.

    A file that cannot be read is reported and the others go on; the exit code is then 1.
    """
    from resnet_cli.engine.predict import predict as run_predict

    if json_out and csv_out:
        raise typer.BadParameter("choose one of --json and --csv")
    result = run_predict(
        weights, inputs, top_k=top_k, batch_size=batch_size, device=device, precision=precision, ema=ema
    )
    if result.note:
        console.warning_line(result.note)
    if json_out:
        console.print_json(result.to_dict())
    elif csv_out:
        _csv(result, top_k)
    else:
        _table(result)
    for p in result.predictions:
        if p.error:
            console.warning_line(f"{p.path}: {p.error}")
    if result.failed:
        console.error_line(f"{result.failed} of {len(result.predictions)} image(s) could not be read")
        raise typer.Exit(1)


def _table(result: PredictResult) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"predictions of {escape(result.weights)}", title_justify="left")
    table.add_column("file")
    table.add_column("top classes (probability)")
    for p in result.predictions:
        text = (
            f"[red]error: {escape(p.error)}[/red]" if p.error else "  ".join(f"{escape(c)} {v:.1%}" for c, v in p.top)
        )
        table.add_row(escape(p.path), text)
    console.stdout_console().print(table)


def _csv(result: PredictResult, top_k: int) -> None:
    k = min(top_k, len(result.classes))
    writer = csv.writer(sys.stdout, lineterminator="\n")
    header = ["path"]
    for i in range(1, k + 1):
        header += [f"class_{i}", f"probability_{i}"]
    writer.writerow([*header, "error"])
    for p in result.predictions:
        cells = [p.path]
        for i in range(k):
            cells += [p.top[i][0], f"{p.top[i][1]:.6f}"] if i < len(p.top) else ["", ""]
        writer.writerow([*cells, p.error or ""])
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    examples = (
        "resnet predict runs/r34 photo.jpg",
        "resnet predict runs/r34/model.safetensors images/ --csv",
        "resnet predict runs/r34/model.onnx images/ --top-k 1 --json",
    )
    # Markdown help: a blank line between examples keeps each on its own line.
    app.command(epilog="Examples:\n\n" + "\n\n".join(examples))(predict)

"""``resnet plot``: learning curves of one or more runs, and confusion matrices and reliability diagrams from
eval reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from resnet_cli.cli import console
from resnet_cli.cli.options import Force, Json, Quiet, complete_from
from resnet_cli.viz import METRICS  # light: matplotlib is imported only when drawing

EXAMPLES = (
    "resnet plot runs/r34",
    "resnet plot runs/r34 --metric loss --out loss.svg",
    "resnet plot runs/r34 runs/r50 --out compare.png",
    "resnet plot studies/digits",
)


def plot(
    runs: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN", help="Run folders (or history.csv files), or one study folder, to draw.", show_default=False
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Curves file (.png, .svg or .pdf) [default: RUN/curves.png; for several runs ./curves-compare.png].",
            show_default=False,
        ),
    ] = None,
    metric: Annotated[
        str,
        typer.Option("--metric", "-m", help="all, loss, acc or lr.", autocompletion=complete_from(*METRICS)),
    ] = "all",
    force: Force = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train vs validation loss and accuracy, generalisation gap and learning rate per epoch.

    Best epoch, learning-rate reductions and an early stop are marked; a run that is not finished says so in
    the figure. One run: figures go into its folder (with its confusion matrix and reliability diagram when its
    eval report still matches the weights) and are redrawn freely. Several runs are overlaid into one
    comparison in the current folder (or --out). Prints the paths of the files written.
    """
    if len(runs) == 1 and (runs[0] / "study.json").is_file():
        _plot_study(runs[0], json_out)
        return
    from resnet_cli.viz import plot_runs

    result = plot_runs(runs, out=out, metric=metric, force=force)
    for note in result.notes:
        console.info_line(note)
    for warning in result.warnings:
        console.warning_line(warning)
    if json_out:
        console.print_json(result.to_dict())
        return
    for path in result.paths:
        console.print_path(path)


def _plot_study(study_dir: Path, json_out: bool) -> None:
    """A study folder: its mean curves, accuracy and gap against the train fraction, and reliability diagrams."""
    from resnet_cli.engine.study_report import study_report
    from resnet_cli.viz_study import study_figures

    report = study_report(study_dir)
    if report.missing:
        console.warning_line(f"{len(report.missing)} run(s) of {study_dir} not finished: drawn without them")
    paths = study_figures(report)
    if json_out:
        console.print_json({"paths": [str(p) for p in paths], "notes": [], "warnings": []})
        return
    for path in paths:
        console.print_path(path)


def register(app: typer.Typer) -> None:
    # Markdown help: a blank line between examples keeps one per line.
    app.command(epilog="Examples:\n\n" + "\n\n".join(f"`{e}`" for e in EXAMPLES))(plot)

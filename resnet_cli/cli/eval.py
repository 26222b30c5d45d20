"""``resnet eval``: per-class report of a run, checkpoint or export on one part of the split."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from resnet_cli.cli import console
from resnet_cli.cli.options import (
    PART_CHOICES,
    Device,
    Force,
    InferencePrecision,
    Json,
    Quiet,
    UseEma,
    Workers,
    complete_from,
)
from resnet_cli.cli.progress import task_progress
from resnet_cli.engine.callbacks import Callback

if TYPE_CHECKING:
    from rich.table import Table

    from resnet_cli.engine.evaluate import EvalReport


def eval_command(
    target: Annotated[
        Path,
        typer.Argument(
            metavar="RUN_OR_WEIGHTS",
            help="Run folder (uses best.pt), .pt checkpoint or .safetensors.",
            show_default=False,
        ),
    ],
    split: Annotated[
        str, typer.Option("--split", "-s", help="test, val or train.", autocompletion=complete_from(*PART_CHOICES))
    ] = "test",
    data: Annotated[
        Path | None,
        typer.Option("--data", "-d", help="Data folder, if not where training found it.", show_default=False),
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option("--manifest", help="Manifest CSV kept elsewhere.", show_default=False)
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", "-b", help="[default: the training batch size]", show_default=False)
    ] = None,
    device: Device = "auto",
    precision: InferencePrecision = "auto",
    workers: Workers = None,
    ema: UseEma = True,
    save: Annotated[
        bool, typer.Option("--save/--no-save", help="Write `eval-SPLIT.json` and `predictions-SPLIT.csv`.")
    ] = True,
    temperature: Annotated[
        bool,
        typer.Option(
            "--temperature",
            help="Fit temperature scaling on the val part and report calibration after it beside the raw figures.",
        ),
    ] = False,
    force: Force = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Loss, top-1/top-5, balanced accuracy, calibration (NLL, ECE, Brier), per-class precision/recall/F1 and the
    confusion matrix.

    The report (JSON) and per-image predictions (CSV) are written beside the weights; the report's path
    is printed last.
    """
    from resnet_cli.engine.evaluate import evaluate

    # --json changes stdout only: progress and warnings stay on stderr unless --quiet.
    with task_progress(f"evaluating on {split}", quiet) as progress:
        report = evaluate(
            target,
            split=split,
            data=data,
            manifest=manifest,
            batch_size=batch_size,
            device=device,
            precision=precision,
            workers=workers,
            save=save,
            force=force,
            ema=ema,
            temperature=temperature,
            callbacks=[_StepCallback(progress)],
        )
    for warning in report.warnings:
        console.warning_line(warning)
    if json_out:
        console.print_json(report.to_dict())
        return
    _render(report)
    if report.report_path:
        console.info_line(f"per-image predictions: {report.predictions_path}")
        console.print_path(report.report_path)


class _StepCallback(Callback):
    def __init__(self, progress: Any) -> None:
        self.progress = progress

    def on_validation_start(self, epoch: int, steps: int) -> None:
        self.progress(0, steps)

    def on_validation_step(self, step: int, steps: int) -> None:
        self.progress(step, steps)


def _render(report: EvalReport) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = console.report_console()
    head = Table(
        title=f"{report.split}: {report.images} images, {escape(report.weights)}",
        title_justify="left",
        show_header=False,
    )
    head.add_column("", style="bold")
    head.add_column("")
    if report.checkpoint:
        head.add_row("weights", escape(report.checkpoint))
    head.add_row("loss", f"{report.loss:.4f}")
    head.add_row("top-1", f"{report.top1:.2%}")
    if report.top5 is not None:
        head.add_row("top-5", f"{report.top5:.2%}")
    head.add_row("balanced accuracy", f"{report.balanced_accuracy:.2%}")
    head.add_row("macro F1", f"{report.macro['f1']:.4f}")
    head.add_row("throughput", f"{report.images_per_s:.1f} images/s ({report.device}, {report.precision})")
    out.print(head)
    out.print(_calibration_table(report))

    table = Table(title="per class", title_justify="left")
    for name in ("class", "precision", "recall", "F1", "support"):
        table.add_column(name, justify="left" if name == "class" else "right")
    for row in report.per_class:
        table.add_row(escape(row.name), f"{row.precision:.4f}", f"{row.recall:.4f}", f"{row.f1:.4f}", str(row.support))
    table.add_section()
    support = sum(r.support for r in report.per_class)
    for name in ("macro", "weighted"):
        avg = getattr(report, name)
        table.add_row(
            f"{name} avg", f"{avg['precision']:.4f}", f"{avg['recall']:.4f}", f"{avg['f1']:.4f}", str(support)
        )
    out.print(table)

    if len(report.classes) <= 20:
        matrix = Table(title="confusion matrix (rows: true, columns: predicted)", title_justify="left")
        matrix.add_column("")
        for name in report.classes:
            matrix.add_column(escape(name[:8]), justify="right")
        for i, (name, counts) in enumerate(zip(report.classes, report.confusion_matrix, strict=True)):
            cells = [f"[bold]{v}[/bold]" if i == j else (str(v) if v else "·") for j, v in enumerate(counts)]
            matrix.add_row(escape(name[:12]), *cells)
        out.print(matrix)


def _calibration_table(report: EvalReport) -> Table:
    """NLL, ECE and Brier score, with a column after temperature scaling when the report has one."""
    from rich.table import Table

    sections: list[tuple[str, dict[str, Any]]] = [
        ("raw", {"nll": report.nll, "ece": report.ece, "brier": report.brier, "top1": report.top1})
    ]
    if report.calibrated is not None and report.temperature is not None:
        sections.append((f"calibrated (T={report.temperature:.2f})", report.calibrated))
    table = Table(title="calibration (ECE: 15 confidence bins)", title_justify="left")
    table.add_column("")
    for name, _ in sections:
        table.add_column(name, justify="right")
    table.add_row("NLL", *(f"{s['nll']:.4f}" for _, s in sections))
    table.add_row("ECE", *(f"{s['ece']:.2%}" for _, s in sections))
    table.add_row("Brier", *(f"{s['brier']:.4f}" for _, s in sections))
    if len(sections) > 1:
        table.add_row("top-1", *(f"{s['top1']:.2%}" for _, s in sections))
    return table


def register(app: typer.Typer) -> None:
    app.command(
        "eval",
        epilog="Examples:\n\n"
        "- `resnet eval runs/r34 --split test`\n"
        "- `resnet eval runs/r34/model.safetensors --data data --json`\n"
        "- `resnet eval runs/r34 --temperature` (calibration after temperature scaling fitted on val)\n"
        "- `resnet eval runs/r34 --manifest runs/r34/manifest.csv --split val` (the split it trained on)",
    )(eval_command)

"""``resnet study``: train and compare architectures over seeds and train fractions; ``resnet study report``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from resnet_cli.cli import console
from resnet_cli.cli.options import ARCH_CHOICES, Json, Quiet, complete_from

if TYPE_CHECKING:  # torch stays unimported until a command runs
    from resnet_cli.engine.study import StudyEvent, StudyPlan
    from resnet_cli.engine.study_report import StudyReport

#: Options of `train` that the study sets per run, or that make no sense per run.
_NOT_PASSED = {
    "data": "--data is the study's own option",
    "manifest": "--manifest is the study's own option",
    "arch": "--arch is the study's own option (repeat it)",
    "seed": "the study sets --seed per run (--seeds)",
    "train_fraction": "the study sets --train-fraction per run (--fractions)",
    "out": "the study names each run folder",
    "resume": "the study resumes interrupted runs itself",
    "force": "the study never replaces a run",
    "json_out": "the study prints its own report (--json)",
    "quiet": "the study runs each training quietly",
}


class _DefaultToRun(TyperGroup):
    """``resnet study STUDY_DIR ...`` means ``resnet study run STUDY_DIR ...``; ``report`` is the other command."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from resnet_cli.cli.app import _format_help  # the app has finished importing by the time help is shown

        _format_help(super().format_help, ctx, formatter)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def run(
    ctx: typer.Context,
    study_dir: Annotated[Path, typer.Argument(metavar="STUDY_DIR", help="Folder of the study.", show_default=False)],
    data: Annotated[Path, typer.Option("--data", "-d", help="ImageFolder root holding the split manifest.")] = Path(
        "data"
    ),
    manifest: Annotated[
        Path | None, typer.Option("--manifest", help="Manifest CSV [default: DATA/manifest.csv].", show_default=False)
    ] = None,
    arch: Annotated[
        list[str] | None,
        typer.Option(
            "--arch",
            "-a",
            metavar="ARCH",
            help="An architecture of the grid (repeat it); ARCH:key=value,... records per-architecture overrides, "
            "e.g. vit-s/4:lr=5e-4.",
            autocompletion=complete_from(*ARCH_CHOICES),
            show_default=False,
        ),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            "--seeds",
            metavar="N|LIST",
            help="How many seeds (3: seeds 0, 1, 2), or a list (0,1,2; one seed alone: 5,) [default: 3, or the "
            "study's on a rerun].",
            show_default=False,
        ),
    ] = None,
    fractions: Annotated[
        str | None,
        typer.Option(
            "--fractions",
            metavar="LIST",
            help="Train fractions, nested and stratified, e.g. 0.1,0.3,1 [default: 1, or the study's on a rerun].",
            show_default=False,
        ),
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(
            "--gpus",
            metavar="IDS",
            help="Run one run per GPU at a time on these CUDA devices, e.g. 0,1,2,3.",
            show_default=False,
        ),
    ] = None,
    print_commands: Annotated[
        bool,
        typer.Option(
            "--print-commands",
            help="Print each pending run as one 'resnet train ... && resnet eval ...' "
            "line for another scheduler, and train nothing.",
        ),
    ] = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train every run of an architecture x seed x fraction grid, evaluate each, and report.

    Any other option is a training option for every run (e.g. --epochs 30 --batch-size 64). Rerunning skips
    finished runs, resumes interrupted ones and may add seeds, fractions or architectures.
    """
    from resnet_cli.engine.callbacks import StopRequest
    from resnet_cli.engine.study import (
        StudyPlan,
        check_runnable,
        merge_plan,
        parse_arch_spec,
        parse_fractions,
        parse_seeds,
        read_plan,
        run_status,
        run_study,
        write_plan,
    )
    from resnet_cli.errors import ConfigError

    if not arch:
        raise ConfigError("give at least one --arch, e.g. --arch 18 --arch vit-ti/4")
    specs = [parse_arch_spec(a) for a in arch]
    if len({s.label for s in specs}) != len(specs):
        raise ConfigError("each --arch may appear once (with its overrides)")
    train_args = list(ctx.args)
    old = read_plan(study_dir)  # a rerun that leaves out --seeds or --fractions keeps the study's
    plan = StudyPlan(
        str(data.resolve()), str(manifest.resolve()) if manifest else None, specs,
        parse_seeds(seeds) if seeds else (old.seeds if old else parse_seeds("3")),
        parse_fractions(fractions) if fractions else (old.fractions if old else [1.0]), train_args,
    )  # fmt: skip
    _check_train_args(plan, study_dir)
    check_runnable(plan)
    gpu_ids = _gpus(gpus)
    plan = merge_plan(old, plan, study_dir)
    if print_commands:
        for planned in plan.runs(study_dir):
            if run_status(planned, plan.eval_split) != "done":  # pending, interrupted, leftover or trained
                typer.echo(planned.shell_line(plan.eval_split, run_status(planned, plan.eval_split)))
        write_plan(study_dir, plan)
        return
    write_plan(study_dir, plan)
    total = len(plan.runs(study_dir))
    console.info_line(
        f"study {study_dir}: {len(plan.archs)} architecture(s) x {len(plan.seeds)} seed(s) x "
        f"{len(plan.fractions)} fraction(s) = {total} runs, measured on {plan.eval_split}",
        quiet,
    )
    from resnet_cli.cli.train import _signals_to

    stop = StopRequest()
    with _signals_to(stop):
        result = run_study(plan, study_dir, gpus=gpu_ids, on_event=lambda e: _event_line(e, quiet), stop=stop)
    _report(study_dir, json_out, quiet)
    if result.failed:
        raise _failed(result.failed)
    if not json_out:
        console.print_path(study_dir)  # the last line on stdout: S=$(resnet study ...)


def report(
    study_dir: Annotated[Path, typer.Argument(metavar="STUDY_DIR", help="Folder of the study.", show_default=False)],
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Aggregate the finished runs of a study (mean, std, 95% CI over seeds; paired comparisons), and say which
    runs have not finished. Writes report.md, runs.csv and report.json into the study folder."""
    result = _report(study_dir, json_out, quiet)
    if not json_out:
        console.print_path(result.study_dir / "report.md")  # the last line on stdout


def _check_train_args(plan: StudyPlan, study_dir: Path) -> None:
    """Parse the training options as `resnet train` would, alone and in every architecture's run, before anything
    starts: unknown options, bad values and options the study sets itself exit 2."""
    import typer.main

    from resnet_cli.cli.app import app
    from resnet_cli.cli.train import FIELDS, to_field
    from resnet_cli.config import TrainConfig
    from resnet_cli.engine.train import check_options
    from resnet_cli.errors import ConfigError

    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    if any(a in ("-h", "--help") for a in plan.train_args):
        raise ConfigError("--help is not a training option: see 'resnet study run --help' and 'resnet train --help'")
    alone = command.make_context("resnet train", list(plan.train_args))
    for name, why in _NOT_PASSED.items():
        source = alone.get_parameter_source(name)
        if source is not None and source.name == "COMMANDLINE":
            raise ConfigError(f"{why}: leave it out of the study's training options")
    if alone.params.get("split") is not None:
        raise ConfigError(f"{_NOT_PASSED['manifest']}: leave --split out of the study's training options")
    for planned in plan.runs(study_dir)[: len(plan.archs)]:  # one per architecture: seeds and fractions are checked
        ctx = command.make_context("resnet train", planned.train_args_full())
        check_options(TrainConfig(**{k: to_field(k, v) for k, v in ctx.params.items() if k in FIELDS}))


def _gpus(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    from resnet_cli.engine.device import parse_gpus, resolve_device

    ids = parse_gpus(text)
    resolve_device("cuda", ids)  # refuse GPUs that are not there before any run starts
    return ids


def _event_line(event: StudyEvent, quiet: bool) -> None:
    where = f"[{event.index}/{event.total}] {event.run.name}"
    if event.kind == "start":
        verb = {"interrupted": "resuming", "leftover": "restarting (no checkpoint was kept)"}.get(event.detail)
        console.info_line(f"{where}: {verb or 'training'}", quiet)
    elif event.kind == "skip":
        console.info_line(f"{where}: done already", quiet)
    elif event.kind == "finish":
        console.info_line(f"{where}: {event.detail} ({event.seconds:.1f} s)", quiet)
    else:
        console.warning_line(f"{where} failed: {event.detail}")


def _report(study_dir: Path, json_out: bool, quiet: bool) -> StudyReport:
    from resnet_cli.engine.study_report import study_report, write_report_files

    result = study_report(study_dir)
    paths = write_report_files(result)
    if json_out:
        console.print_json(result.to_dict())
    else:
        _render(result)
        if result.missing:
            names = ", ".join(f"{name} ({status})" for name, status in result.missing[:5])
            more = f" and {len(result.missing) - 5} more" if len(result.missing) > 5 else ""
            console.warning_line(f"{len(result.missing)} run(s) not finished: {names}{more}")
        console.info_line(f"wrote {', '.join(str(p) for p in paths)}", quiet)
    return result


def _failed(names: list[str]) -> Exception:
    from resnet_cli.errors import RunFailedError

    return RunFailedError(
        f"{len(names)} run(s) failed: {', '.join(names[:5])}; fix the cause and run the study again "
        "(finished runs are kept)"
    )


def _render(result: StudyReport) -> None:
    from rich.markup import escape
    from rich.table import Table

    def cell(stat: Any, scale: float = 100.0, digits: int = 1) -> str:
        if stat.mean is None:
            return "-"
        text = f"{stat.mean * scale:.{digits}f}"
        return text + (f" ± {stat.std * scale:.{digits}f}" if stat.std is not None else "")

    table = Table(title=f"study {escape(str(result.study_dir))}: mean ± std over seeds", title_justify="left")
    for column in ("arch", "fraction", "runs", "params", f"{result.plan.eval_split} top-1 %", "ECE %", "NLL",
                   "acc gap % (best)", "best epoch"):  # fmt: skip
        table.add_column(column, justify="left" if column == "arch" else "right")
    for g in result.groups:
        table.add_row(
            escape(g.label), f"{g.fraction:g}", str(g.runs), f"{g.params / 1e6:.1f} M" if g.params else "-",
            cell(g.stats["test_top1"]), cell(g.stats["test_ece"]), cell(g.stats["test_nll"], 1, 3),
            cell(g.stats["gap_acc_best"]), cell(g.stats["best_epoch"], 1, 1),
        )  # fmt: skip
    out = console.report_console()
    out.print(table)
    for comparison in result.comparisons:
        if comparison.metric == "test_top1":
            out.print(escape(comparison.sentence()))


def register(app: typer.Typer) -> None:
    study_app = type(app)(
        name="study",
        cls=_DefaultToRun,
        help="Compare architectures over seeds and train fractions: resnet study STUDY_DIR --arch 18 --arch "
        "vit-ti/4 [--seeds 3] [--fractions 0.1,0.3,1] [train options]; resnet study report STUDY_DIR.",
        no_args_is_help=True,
        rich_markup_mode="markdown",
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    study_app.command(
        "run",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        epilog="Examples:\n\n"
        "    resnet study studies/digits --data data --arch 18 --arch vit-ti/4 --seeds 3 --fractions 0.1,0.3,1 "
        "--epochs 20\n\n"
        "    resnet study studies/digits --data data --arch 18 --arch vit-ti/4 --print-commands | parallel\n\n"
        "    resnet study report studies/digits",
    )(run)
    study_app.command("report")(report)
    app.add_typer(study_app)

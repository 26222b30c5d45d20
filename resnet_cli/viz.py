"""Learning curves, confusion matrices and reliability diagrams with matplotlib's object API (``Figure``, Agg;
no pyplot state, no display needed).

The curves figure is the overfitting picture: train vs validation loss and accuracy per epoch, the
generalisation gap in loss and in accuracy, the learning rate on a log scale, with the best epoch,
learning-rate reductions and an early stop marked. Several runs share the axes, one colour and one marker
shape per run. The gap is honest only between validation and the eval-mode figures of a fixed train subset
(``train_eval_loss``/``train_eval_acc``); histories without them fall back to the running train averages,
and the panel says so.

The reliability diagram (calibration) comes from the same eval report as the confusion matrix: accuracy per
confidence bin against the diagonal, the images per bin below, raw and after temperature scaling when the report
has both. :func:`reliability_figure` overlays several models' curves (a study's architectures) in one figure.

Figures the tool writes into a run folder are recorded as its own there (:func:`resnet_cli.fs.record_owned`),
so a later ``resnet plot`` redraws them freely; ``--force`` guards only files the user made. Plotting never
takes the run lock: it reads ``history.csv``, which training replaces atomically, so it works on a live run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import socket
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from resnet_cli.errors import ConfigError, DatasetError
from resnet_cli.fs import (
    LOCK_NAME,
    OWNED_NAME,
    atomic_write_with,
    owned_files,
    record_owned,
    refuse_overwrite,
    refuse_overwrite_unless_owned,
)
from resnet_cli.io.history import HISTORY_NAME, EpochRecord, has_honest_train, read_history, record_figures

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn, so importing this module stays cheap
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

METRICS = ("all", "loss", "acc", "lr")
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
_METADATA = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}
_PANELS = {
    "all": ["loss", "acc", "gap", "acc_gap", "lr"],
    "loss": ["loss", "gap"],
    "acc": ["acc", "acc_gap"],
    "lr": ["lr"],
}
_SPLITS = ("test", "val", "train")
# One marker shape per run, so curves that coincide stay distinguishable; "o" (hollow, large), "X" and "v"
# are kept for the best epoch, an early stop and learning-rate reductions.
_RUN_MARKERS = ("s", "D", "^", "P", "*", "h", "<", ">", "d", "p")
# Line styles (Final, so matplotlib's Literal-typed linestyle accepts them).
_TRAIN_RUNNING: Final = "--"
_TRAIN_EVAL: Final = "-."
_VAL: Final = "-"
_EMA_VAL: Final = "ema"  # drawn with _EMA_DASHES: the four format-string styles are taken
_EMA_DASHES: Final = (0, (3, 1, 1, 1, 1, 1))
_BIASED = "from running train averages (biased)"


@dataclass
class RunCurves:
    """What one run contributes to the figure."""

    path: Path  # the folder that holds history.csv
    name: str
    history: list[EpochRecord]
    best_epoch: int | None
    stop_reason: str | None = None  # "completed" or "early_stop" for a finished run of ours
    ours: bool = False  # written by resnet train (config.json of ours, or our file record)
    finished: bool = False  # run.json says "finished": true, covering every epoch in the history
    planned_epochs: int | None = None  # config.json "train"."epochs"
    training: bool | None = None  # a live `resnet train` holds the folder (None: cannot tell, another host)
    schedule: str | None = None  # config.json "train"."schedule" of our runs: plateau, cosine or step

    @property
    def honest_gap(self) -> bool:
        """Whether the gap can come from the eval-mode train subset (every epoch has it)."""
        return has_honest_train(self.history)

    @property
    def lr_drops(self) -> list[int]:
        """Epochs where the learning rate was cut: a plateau's or a step's reductions, not a cosine's decay."""
        if self.schedule == "cosine":
            return []
        return [
            b.epoch
            for a, b in zip(self.history, self.history[1:], strict=False)
            if a.lr is not None and b.lr is not None and b.lr < a.lr * 0.999
        ]

    @property
    def progress(self) -> str | None:
        """``training, epoch 3 of 30`` for an unfinished run of ours; None for a finished or foreign run."""
        if not self.ours or self.finished:
            return None
        done = self.history[-1].epoch
        of = f" of {self.planned_epochs}" if self.planned_epochs else ""
        if self.training is True:
            return f"training, epoch {done}{of}"
        if self.training is False:
            return f"stopped at epoch {done}{of}"
        return f"not finished, epoch {done}{of}"

    @property
    def label(self) -> str:
        """The run's name as the figure shows it, with its progress when it is not finished."""
        return f"{self.name} ({self.progress})" if self.progress else self.name


@dataclass
class PlotResult:
    paths: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # which run lacks what (informational)
    warnings: list[str] = field(default_factory=list)  # something shown or left out that the user must know

    def to_dict(self) -> dict[str, Any]:
        return {"paths": [str(p) for p in self.paths], "notes": self.notes, "warnings": self.warnings}


def load_run(path: str | os.PathLike[str]) -> RunCurves | None:
    """A run's history and markers, or None when it has no finished epoch yet.

    Raises:
        DatasetError: the path does not exist, or its history is malformed.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"run folder {path} does not exist")
    history_file = path if path.is_file() else path / HISTORY_NAME
    if not history_file.is_file():
        return None
    history = read_history(history_file)
    if not history:
        return None
    folder = history_file.parent
    config = _read_json(folder / "config.json")
    ours = _is_our_config(config) or (folder / OWNED_NAME).is_file()
    summary = _read_json(folder / "run.json") if ours else {}
    epochs_run = summary.get("epochs_run")
    # A finished run extended with --resume --epochs N keeps its old run.json until the new end.
    finished = summary.get("finished") is True and not (isinstance(epochs_run, int) and epochs_run < len(history))
    # The epoch training chose: lowest validation loss of the weights of record (the moving average with --ema).
    best = min(history, key=lambda r: loss if math.isfinite(loss := record_figures(r)[0]) else math.inf).epoch
    planned = config.get("train", {}).get("epochs") if ours else None
    return RunCurves(
        path=folder,
        name=folder.name,
        history=history,
        best_epoch=int(summary.get("best_epoch", best)) if finished else best,
        stop_reason=summary.get("stop_reason") if finished else None,
        ours=ours,
        finished=finished,
        planned_epochs=planned if isinstance(planned, int) and planned > 0 else None,
        training=None if not ours or finished else _training_now(folder),
        schedule=schedule if ours and isinstance(schedule := config.get("train", {}).get("schedule"), str) else None,
    )


def _why_no_curves(folder: Path) -> str:
    """Why a folder without a history draws nothing: a run before its first epoch, or not a run at all."""
    if (folder / "config.json").is_file() or (folder / OWNED_NAME).is_file():
        return f"{folder} has no finished epoch yet (no {HISTORY_NAME})"
    return f"{folder} is not a run folder (no {HISTORY_NAME} or config.json): give a run, a study or a {HISTORY_NAME}"


def plot_runs(
    runs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str] | None = None,
    metric: str = "all",
    force: bool = False,
) -> PlotResult:
    """Draw the learning curves of ``runs`` (overlaid when several) and, for a single run, its confusion matrix
    and reliability diagram from its eval report when that report still matches the weights.

    One run: ``RUN/curves.png`` (or ``out``), ``RUN/confusion-<split>.<fmt>`` and ``RUN/reliability-<split>.<fmt>``
    (the latter only from reports that carry calibration bins). Several runs: only the
    comparison, ``curves-compare.png`` in the current folder (or ``out``); no run's folder is touched.

    Raises:
        ConfigError: bad metric or output extension.
        DatasetError: no run has a history.
        OutputExistsError: a figure the user made exists and ``force`` is false.
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown --metric {metric!r}: choose one of {', '.join(METRICS)}")
    if not runs:
        raise ConfigError("give at least one run folder")
    result = PlotResult()
    loaded: list[RunCurves] = []
    missing: list[str] = []
    for run in runs:
        curves = load_run(run)
        if curves is None:
            missing.append(_why_no_curves(Path(run)))
            result.notes.append(f"{missing[-1]}: left out of the curves")
            continue
        if curves.progress:
            result.notes.append(f"{curves.path}: {curves.progress} (the figure says so)")
        loaded.append(curves)
    if not loaded:
        raise DatasetError(f"nothing to plot: {'; '.join(missing)}")
    _unique_names(loaded)

    compare = len(runs) > 1
    default = Path("curves-compare.png") if compare else loaded[0].path / "curves.png"
    target = Path(out) if out else default
    fmt = FORMATS.get(target.suffix.lower())
    if fmt is None:
        raise ConfigError(f"cannot write {target}: use a .png, .svg or .pdf file name")
    jobs: list[tuple[Path, Callable[[], Figure]]] = [(target, lambda: curves_figure(loaded, metric))]
    stale: list[str] = []  # stems of figures whose eval report no longer matches the weights
    if not compare:
        jobs += _eval_report_jobs(loaded[0], fmt, result, stale)

    run_folders = {c.path.resolve() for c in loaded}
    for path, _ in jobs:
        if path.parent.resolve() in run_folders:
            refuse_overwrite_unless_owned(path, force, "figure")
        else:
            refuse_overwrite(path, force, "figure")
    for stem in stale:  # only once every check has passed
        removed = _remove_owned_figures(loaded[0].path, stem)
        if removed:
            result.notes.append(f"removed the out-of-date {', '.join(removed)} from {loaded[0].path}")
    for path, make in jobs:
        atomic_write_with(path, functools.partial(_save_figure, make(), fmt))
        if path.parent.resolve() in run_folders:
            record_owned(path.parent, [path.name])
        result.paths.append(path)
    return result


def _eval_report_jobs(
    run: RunCurves, fmt: str, result: PlotResult, stale: list[str]
) -> list[tuple[Path, Callable[[], Figure]]]:
    """The confusion matrix and reliability diagram of the first eval report of ``run`` that still matches its
    weights; the figure stems of stale reports go into ``stale``."""
    for split in _SPLITS:
        report_path = run.path / f"eval-{split}.json"
        if not report_path.is_file():
            continue
        doc = _read_json(report_path)
        if not isinstance(doc.get("confusion_matrix"), list) or not isinstance(doc.get("classes"), list):
            result.warnings.append(f"{report_path} is not a readable eval report: run 'resnet eval' again")
            continue
        reason = _stale_reason(report_path, doc)
        if reason:
            stale += [f"confusion-{split}", f"reliability-{split}"]
            again = f"resnet eval {run.path}" + ("" if split == "test" else f" --split {split}")
            result.warnings.append(
                f"{report_path} is stale: {reason}; no confusion matrix or reliability diagram from it; "
                f"run '{again}' again"
            )
            continue
        title = f"{run.name}: {split}"
        jobs: list[tuple[Path, Callable[[], Figure]]] = [
            (run.path / f"confusion-{split}.{fmt}", functools.partial(confusion_figure, doc, title))
        ]
        sections = reliability_sections(doc)
        if sections:
            path = run.path / f"reliability-{split}.{fmt}"
            jobs.append((path, functools.partial(reliability_diagram, sections, title)))
        else:
            result.notes.append(
                f"{report_path} has no calibration figures (an older resnet eval): no reliability diagram"
            )
        return jobs
    if not stale and run.ours:
        when = " once training has finished" if run.training else ""
        result.notes.append(f"{run.path} has no eval report: no confusion matrix (run 'resnet eval {run.path}'{when})")
    return []


def _save_figure(figure: Figure, fmt: str, handle: IO[bytes]) -> None:
    figure.savefig(handle, format=fmt, metadata=_METADATA[fmt])


def _stale_reason(report_path: Path, doc: dict[str, Any]) -> str | None:
    """Why an eval report no longer describes the weights beside it, or None when it still does.

    ``resnet eval`` writes the report beside the weights it evaluated, so the file to compare is the one with
    the recorded name in the report's folder (which also holds when the whole run folder was moved).
    """
    weights, expected = doc.get("weights"), doc.get("weights_sha256")
    if not isinstance(weights, str) or not isinstance(expected, str):
        return None  # an older report without the fingerprint: nothing to compare
    current = report_path.parent / Path(weights).name
    if not current.is_file():
        return f"{current.name} is gone"
    from resnet_cli.io.weights import file_sha256  # deferred: it pulls in torch

    if file_sha256(current) != expected:
        return f"{current.name} changed since"
    return None


def _remove_owned_figures(folder: Path, stem: str) -> list[str]:
    """Delete the tool's own figures named ``stem.<fmt>`` in ``folder`` (never a file the user made)."""
    removed: list[str] = []
    owned = owned_files(folder)
    for suffix in FORMATS:
        path = folder / f"{stem}{suffix}"
        if path.name in owned and path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path.name)
    return removed


# -- the curves figure -----------------------------------------------------------------------------------------


def curves_figure(runs: list[RunCurves], metric: str = "all") -> Figure:
    """The learning-curves ``Figure`` of ``runs``: panels by ``metric``, one legend for the whole figure."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = _PANELS[metric]
    cols = 2 if len(panels) > 1 else 1
    rows = -(-len(panels) // cols)
    figure = Figure(figsize=(6.5 * cols, 4.0 * rows + 0.8), dpi=100, layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    first = min(r.history[0].epoch for r in runs)
    last = max(r.history[-1].epoch for r in runs)
    for ax, panel in zip(axes, panels, strict=False):
        for i, run in enumerate(runs):
            _draw(ax, panel, run, i, len(runs))
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        # Epochs are whole numbers; a short run would otherwise get ticks at 1.25, 1.5, ...
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if last - first < 2:
            ax.set_xlim(first - 0.5, last + 0.5)
        _finish_panel(ax, panel, runs)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    figure.suptitle(f"learning curves: {' vs '.join(r.label for r in runs)}", fontsize=13)
    handles = _legend_handles(runs, panels)
    figure.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)), fontsize=9)
    return figure


def _series(run: RunCurves, panel: str) -> list[tuple[str, list[float | None]]]:
    """(line style, values per epoch) of what ``run`` draws in ``panel``."""
    h = run.history
    out: list[tuple[str, list[float | None]]]
    if panel == "loss":
        out = [(_TRAIN_RUNNING, [r.train_loss for r in h])]
        if any(r.train_eval_loss is not None for r in h):
            out.append((_TRAIN_EVAL, [r.train_eval_loss for r in h]))
        out.append((_VAL, [r.val_loss for r in h]))
        if any(r.ema_val_loss is not None for r in h):  # last: the weights of record carry the best-epoch ring
            out.append((_EMA_VAL, [r.ema_val_loss for r in h]))
        return out
    if panel == "acc":
        out = [(_TRAIN_RUNNING, [100 * r.train_acc for r in h])]
        if any(r.train_eval_acc is not None for r in h):
            out.append((_TRAIN_EVAL, [None if r.train_eval_acc is None else 100 * r.train_eval_acc for r in h]))
        out.append((_VAL, [100 * r.val_acc for r in h]))
        if any(r.ema_val_acc is not None for r in h):
            out.append((_EMA_VAL, [None if r.ema_val_acc is None else 100 * r.ema_val_acc for r in h]))
        return out
    if panel == "gap":
        train = [r.train_eval_loss if run.honest_gap else r.train_loss for r in h]
        return [("-", [None if t is None else r.val_loss - t for r, t in zip(h, train, strict=True)])]
    if panel == "acc_gap":
        train = [r.train_eval_acc if run.honest_gap else r.train_acc for r in h]
        return [("-", [None if t is None else 100 * (t - r.val_acc) for r, t in zip(h, train, strict=True)])]
    return [("-", [r.lr for r in h])]


def _draw(ax: Axes, panel: str, run: RunCurves, index: int, count: int) -> None:
    colour = f"C{index % 10}"
    marker = _RUN_MARKERS[index % len(_RUN_MARKERS)]
    epochs = [r.epoch for r in run.history]
    every = max(1, len(epochs) // 40)  # a marker on every epoch of a short run, not a smear on a long one
    for style, values in _series(run, panel):
        ys = [_nan_if_none(v) for v in values]
        if panel == "lr":
            if all(v is None for v in values):
                continue
            # Runs with the same schedule draw the same line: nest them, earlier runs wider, so all stay visible.
            width = 1.5 + 1.5 * min(count - 1 - index, 5)
            ax.plot(
                epochs,
                ys,
                style,
                color=colour,
                linewidth=width,
                drawstyle="steps-post",
                marker=marker,
                markersize=4 + min(count - 1 - index, 5),
                markevery=every,
                label=f"{run.name} lr",
                zorder=2 + index,
            )
        else:
            # A format string, or for the moving average a dash pattern no format string has.
            ema = style == _EMA_VAL
            fmt: tuple[str, ...] = () if ema else (style,)
            dashes: dict[str, Any] = {"linestyle": _EMA_DASHES} if ema else {}
            ax.plot(
                epochs,
                ys,
                *fmt,
                **dashes,
                color=colour,
                marker=marker,
                markersize=4,
                markevery=every,
                label=f"{run.name} {panel} {style}",
                zorder=2 + index,
            )
    if panel in ("loss", "acc"):
        _markers(ax, run, _series(run, panel)[-1][1], colour)
    elif panel == "lr" and run.lr_drops:
        lr_at = {r.epoch: r.lr for r in run.history if r.lr is not None}  # every drop is between two known rates
        ax.plot(
            run.lr_drops,
            [lr_at[e] for e in run.lr_drops],
            "v",
            color=colour,
            markersize=8,
            label=f"_{run.name} lr reductions",
            zorder=10,
        )


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


def _markers(ax: Axes, run: RunCurves, values: list[float | None], colour: str) -> None:
    by_epoch = dict(zip([r.epoch for r in run.history], values, strict=True))
    best = run.best_epoch
    at_best = None if best is None else by_epoch.get(best)
    if best is not None and at_best is not None:
        ax.plot(
            [best],
            [at_best],
            "o",
            color=colour,
            markersize=9,
            markerfacecolor="none",
            markeredgewidth=2,
            label=f"_{run.name} best epoch",
            zorder=10,
        )
    for epoch in run.lr_drops:
        ax.axvline(epoch, color=colour, linestyle=":", linewidth=1, alpha=0.7, label=f"_{run.name} lr reduction")
    if run.stop_reason == "early_stop":
        last = run.history[-1].epoch
        ax.plot(
            [last],
            [_nan_if_none(by_epoch[last])],
            "X",
            color=colour,
            markersize=10,
            label=f"_{run.name} early stop",
            zorder=10,
        )


def _finish_panel(ax: Axes, panel: str, runs: list[RunCurves]) -> None:
    """Titles, scales and limits that hold for the whole panel, over all runs."""
    series = [values for run in runs for _, values in _series(run, panel)]
    if panel == "loss":
        ax.set_title("loss (log scale)")
        ax.set_ylabel("cross-entropy")
        ax.set_yscale("log")
        _plain_log_labels(ax)
        _set_ylim(ax, series, log=True)
    elif panel == "acc":
        ax.set_title("accuracy")
        ax.set_ylabel("accuracy (%)")  # bounded: every value stays in view, the first epoch's included
    elif panel in ("gap", "acc_gap"):
        what = "validation minus train loss" if panel == "gap" else "train minus validation accuracy"
        ax.set_title(f"generalisation gap: {what}\n{_gap_source(runs)}", fontsize=10)
        ax.set_ylabel("loss difference" if panel == "gap" else "accuracy difference (points)")
        # The sign is the message (above zero: overfitting), so zero is always in view, drawn plainly.
        ax.axhline(0.0, color="black", linewidth=1.2, alpha=0.8, zorder=1.5, label="_zero")
        _set_ylim(ax, series, include_zero=True)
    elif panel == "lr":
        ax.set_title("learning rate (log scale; triangles: reductions)")
        ax.set_ylabel("learning rate")
        if any(r.lr is not None for run in runs for r in run.history):
            ax.set_yscale("log")
            _plain_log_labels(ax)
        else:
            ax.text(0.5, 0.5, "no learning rate recorded", ha="center", va="center", transform=ax.transAxes)


def _gap_source(runs: list[RunCurves]) -> str:
    honest = [r for r in runs if r.honest_gap]
    if len(honest) == len(runs):
        return "train measured in eval mode on a fixed train subset, as validation is"
    if not honest:
        return _BIASED
    return f"{', '.join(r.name for r in runs if not r.honest_gap)}: {_BIASED}; others: eval-mode train subset"


def _set_ylim(ax: Axes, series: list[list[float | None]], log: bool = False, include_zero: bool = False) -> None:
    limits = robust_limits(series, log=log, include_zero=include_zero)
    if limits is None:
        return
    ax.set_ylim(*limits)
    lo, hi = limits
    if any(v is not None and math.isfinite(v) and not lo <= v <= hi for s in series for v in s):
        ax.text(
            0.99,
            0.98,
            "outliers beyond the axis left out of view",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=8,
            color="0.35",
        )


def robust_limits(
    series: list[list[float | None]], log: bool = False, include_zero: bool = False
) -> tuple[float, float] | None:
    """Axis limits for all ``series`` of a panel together, so one run's outlier does not flatten the others.

    The quartiles are pooled over every run's values; values beyond Tukey's far-out fences (3 interquartile
    ranges past the quartiles), typically a first epoch, are left out of view. ``log`` works in decades;
    ``include_zero`` keeps 0 in view.
    """
    values = [v for s in series for v in s if v is not None and math.isfinite(v) and (v > 0 or not log)]
    if not values:
        return None
    xs = sorted(math.log10(v) for v in values) if log else sorted(values)
    lo, hi = xs[0], xs[-1]
    if len(xs) >= 6:  # fewer values give no quartiles worth the name
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
        iqr = q3 - q1
        if iqr > 0:
            lo, hi = max(lo, q1 - 3 * iqr), min(hi, q3 + 3 * iqr)
    if include_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    span = hi - lo or (0.2 if log else abs(hi) * 0.2 or 1.0)
    lo, hi = lo - 0.08 * span, hi + 0.08 * span
    return (10**lo, 10**hi) if log else (lo, hi)


def _plain_log_labels(ax: Axes) -> None:
    """Decimal labels (0.6, 0.001) on a log axis instead of matplotlib's 6×10⁻¹; the formatter still decides
    which minor ticks get one."""
    from matplotlib.ticker import LogFormatter

    class PlainLogFormatter(LogFormatter):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return plain_number(x) if super().__call__(x, pos) else ""

    ax.yaxis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


def plain_number(x: float) -> str:
    """``0.6``, ``0.0001``, ``2000``: six significant digits, never scientific notation."""
    import numpy as np

    return np.format_float_positional(float(f"{x:.6g}"), trim="-")


def _legend_handles(runs: list[RunCurves], panels: list[str]) -> list[Line2D]:
    """One entry per run (its colour, marker and progress) and one per line style, instead of a legend per panel."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=f"C{i % 10}", linewidth=3, marker=_RUN_MARKERS[i % len(_RUN_MARKERS)], label=run.label)
        for i, run in enumerate(runs)
    ]
    if {"loss", "acc"} & set(panels):
        handles.append(Line2D([], [], color="black", linestyle=_TRAIN_RUNNING, label="train (running average)"))
        if any(r.train_eval_loss is not None for run in runs for r in run.history):
            handles.append(Line2D([], [], color="black", linestyle=_TRAIN_EVAL, label="train (eval mode, subset)"))
        handles.append(Line2D([], [], color="black", linestyle=_VAL, label="validation"))
        if any(r.ema_val_loss is not None for run in runs for r in run.history):
            handles.append(Line2D([], [], color="black", linestyle=_EMA_DASHES, label="validation, moving average"))
        handles.append(
            Line2D(
                [],
                [],
                color="black",
                marker="o",
                linestyle="",
                markerfacecolor="none",
                markeredgewidth=2,
                label="best epoch",
            )
        )
    if any(r.lr_drops for r in runs):
        handles.append(Line2D([], [], color="black", linestyle=":", label="learning-rate reduction"))
    if any(r.stop_reason == "early_stop" for r in runs):
        handles.append(Line2D([], [], color="black", marker="X", linestyle="", label="early stop"))
    return handles


# -- the confusion matrix --------------------------------------------------------------------------------------


def confusion_figure(report: dict[str, Any], title: str) -> Figure:
    """Row-normalised confusion matrix (each true class sums to 1), counts in the cells when they fit."""
    import numpy as np
    from matplotlib.figure import Figure

    matrix = np.asarray(report["confusion_matrix"], dtype=float)
    classes = list(report["classes"])
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    k = len(classes)
    side = min(14.0, max(5.0, 0.45 * k + 3))
    figure = Figure(figsize=(side + 1.2, side), dpi=100, layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = range(k)
    ax.set_xticks(ticks, [c[:14] for c in classes], rotation=45 if k > 6 else 0, ha="right" if k > 6 else "center")
    ax.set_yticks(ticks, [c[:14] for c in classes])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = report.get("top1")
    suffix = f" (top-1 {accuracy:.2%})" if isinstance(accuracy, float) else ""
    ax.set_title(f"confusion matrix, normalised by true class: {title}{suffix}")
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    colour = "white" if normalised[i, j] > 0.5 else "black"
                    ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=8, color=colour)
    return figure


# -- reliability diagrams -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReliabilitySection:
    """One reliability diagram: its name (raw, or after temperature scaling), the ECE and the bins."""

    name: str
    ece: float
    bins: list[dict[str, Any]]  # lower, upper, count, confidence, accuracy (None for an empty bin)


def reliability_sections(report: dict[str, Any]) -> list[ReliabilitySection]:
    """The raw and (when present) temperature-scaled reliability bins of an eval report; [] for a report
    without them (written before calibration was reported) or with malformed bins."""
    sections: list[ReliabilitySection] = []
    for name, part in (("raw", report), ("calibrated", report.get("calibrated"))):
        if not isinstance(part, dict) or not _valid_bins(part.get("reliability")):
            continue
        ece = part.get("ece")
        ece = float(ece) if isinstance(ece, (int, float)) else _ece(part["reliability"])
        if name == "calibrated":
            t = report.get("temperature")
            name = f"after temperature scaling (T={t:.2f})" if isinstance(t, (int, float)) else "calibrated"
        sections.append(ReliabilitySection(name, ece, part["reliability"]))
    return sections


def _valid_bins(bins: Any) -> bool:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    return (
        isinstance(bins, list)
        and bool(bins)
        and all(
            isinstance(b, dict)
            and all(number(b.get(k)) for k in ("lower", "upper", "count"))
            and all(b.get(k) is None or number(b.get(k)) for k in ("confidence", "accuracy"))
            and (b["count"] == 0 or (b.get("confidence") is not None and b.get("accuracy") is not None))
            for b in bins
        )
        and sum(b["count"] for b in bins) > 0
    )


def _ece(bins: list[dict[str, Any]]) -> float:
    from resnet_cli.engine.calibration import ece_from_bins  # deferred: it pulls in torch

    return ece_from_bins(bins)


def reliability_diagram(sections: list[ReliabilitySection], title: str) -> Figure:
    """Reliability diagram(s) of one model, side by side: accuracy per confidence bin (bars) against the diagonal,
    the gap to the bin's mean confidence hatched, and the images per bin in a panel below (counts on the bars)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(5.5 * len(sections), 6.5), dpi=100, layout="constrained")
    axes = figure.subplots(2, len(sections), squeeze=False, sharex=True, height_ratios=[3, 1])
    for column, section in enumerate(sections):
        top, bottom = axes[0, column], axes[1, column]
        full = [b for b in section.bins if b["count"]]
        lowers = [b["lower"] for b in full]
        widths = [b["upper"] - b["lower"] for b in full]
        accuracy = [b["accuracy"] for b in full]
        gap = [b["confidence"] - b["accuracy"] for b in full]
        top.bar(lowers, accuracy, widths, align="edge", color="C0", edgecolor="black", linewidth=0.6, label="accuracy")
        top.bar(
            lowers,
            gap,
            widths,
            bottom=accuracy,
            align="edge",
            color="C3",
            alpha=0.35,
            edgecolor="C3",
            hatch="//",
            linewidth=0.6,
            label="gap to mean confidence",
        )
        top.plot([0, 1], [0, 1], "--", color="black", linewidth=1.2, label="perfect calibration")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_ylabel("accuracy")
        top.set_title(f"{section.name}: ECE {section.ece:.2%}")
        top.grid(True, alpha=0.3)
        top.legend(loc="upper left", fontsize=9)
        counts = [b["count"] for b in full]
        bars = bottom.bar(lowers, counts, widths, align="edge", color="0.55", edgecolor="black", linewidth=0.6)
        bottom.bar_label(bars, fontsize=7, padding=1)
        bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
        bottom.set_ylim(0, max(counts) * 1.25)
        bottom.set_xlabel("confidence (top-1 probability)")
        bottom.set_ylabel("images")
        bottom.grid(True, axis="y", alpha=0.3)
    total = sum(b["count"] for b in sections[0].bins)
    figure.suptitle(f"reliability: {title} ({total} images, {len(sections[0].bins)} bins)", fontsize=13)
    return figure


def reliability_curves(bins_by_label: dict[str, list[dict[str, Any]]], title: str) -> Figure:
    """Several models' reliability curves in one figure: accuracy against mean confidence per non-empty bin, one
    line with markers per label (its ECE in the legend), the share of images per bin below.

    Raises:
        ConfigError: no labels, or bins that are not reliability bins of an eval report.
    """
    from matplotlib.figure import Figure

    if not bins_by_label:
        raise ConfigError("reliability_figure needs at least one label with its bins")
    for label, bins in bins_by_label.items():
        if not _valid_bins(bins):
            raise ConfigError(f"the bins of {label!r} are not reliability bins of an eval report (its 'reliability')")
    figure = Figure(figsize=(7.0, 7.0), dpi=100, layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], "--", color="black", linewidth=1.2, label="perfect calibration")
    for i, (label, bins) in enumerate(bins_by_label.items()):
        colour, marker = f"C{i % 10}", _RUN_MARKERS[i % len(_RUN_MARKERS)]
        full = [b for b in bins if b["count"]]
        total = sum(b["count"] for b in bins)
        top.plot(
            [b["confidence"] for b in full],
            [b["accuracy"] for b in full],
            "-",
            color=colour,
            marker=marker,
            label=f"{label} (ECE {_ece(bins):.2%})",
        )
        bottom.plot(
            [(b["lower"] + b["upper"]) / 2 for b in full],
            [100 * b["count"] / total for b in full],
            "-",
            color=colour,
            marker=marker,
        )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.grid(True, alpha=0.3)
    top.legend(loc="upper left", fontsize=9)
    top.set_title(f"reliability: {title}")
    bottom.set_xlabel("confidence (top-1 probability)")
    bottom.set_ylabel("images (%)")
    bottom.set_ylim(bottom=0)
    bottom.grid(True, alpha=0.3)
    return figure


def reliability_figure(
    bins_by_label: dict[str, list[dict[str, Any]]], title: str, path: str | os.PathLike[str]
) -> Path:
    """Write :func:`reliability_curves` to ``path`` (``.png``, ``.svg`` or ``.pdf``, atomically) and return it.

    ``bins_by_label`` maps a label (an architecture) to the ``reliability`` bins of its eval report (or bins pooled
    the same way). The caller decides whether ``path`` may be replaced.

    Raises:
        ConfigError: bad extension, no labels, or bins that are not reliability bins.
    """
    target = Path(path)
    fmt = FORMATS.get(target.suffix.lower())
    if fmt is None:
        raise ConfigError(f"cannot write {target}: use a .png, .svg or .pdf file name")
    figure = reliability_curves(bins_by_label, title)
    atomic_write_with(target, functools.partial(_save_figure, figure, fmt))
    return target


# -- reading a run folder --------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or {} when it is missing, unreadable or not an object."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _is_our_config(config: dict[str, Any]) -> bool:
    """Whether a config.json is the one `resnet train` writes (a model trained elsewhere brings none)."""
    return isinstance(config.get("train"), dict) and isinstance(config.get("model"), dict)


def _training_now(folder: Path) -> bool | None:
    """Whether a live `resnet train` holds ``folder``'s lock, read from the lock file without taking the lock.

    True: its holder is a training command whose process is alive on this host. False: no lock, a stale lock
    from a dead process, or another command holds it (then no training can be running). None: the holder is
    on another host, whose processes cannot be checked from here.
    """
    holder = _read_json(folder / LOCK_NAME)
    if not holder:
        return False
    if holder.get("host") != socket.gethostname():
        return None
    command, pid = str(holder.get("command", "")), holder.get("pid")
    if not isinstance(pid, int) or not command.startswith(("train", "study")):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by someone else
    return True


def _unique_names(runs: list[RunCurves]) -> None:
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        for run in runs:
            run.name = str(run.path)

"""Learning curves and confusion matrices with matplotlib's object API (``Figure``, Agg; no pyplot state,
no display needed).

The curves figure is the overfitting picture: train vs validation loss and accuracy per epoch, the
generalisation gap (validation minus training loss), the learning rate on a log scale, with the best epoch,
learning-rate reductions and an early stop marked. Several runs share the axes, one colour per run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from resnet_cli.errors import ConfigError, DatasetError
from resnet_cli.io.atomic import atomic_write_with, refuse_overwrite
from resnet_cli.io.history import HISTORY_NAME, EpochRecord, read_history

METRICS = ("all", "loss", "acc", "lr")
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
_METADATA = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}


@dataclass
class RunCurves:
    """What one run contributes to the figure."""

    path: Path
    name: str
    history: list[EpochRecord]
    best_epoch: int | None
    stop_reason: str | None  # "completed", "early_stop", or None while training (or interrupted)

    @property
    def lr_drops(self) -> list[int]:
        return [b.epoch for a, b in zip(self.history, self.history[1:], strict=False) if b.lr < a.lr * 0.999]


@dataclass
class PlotResult:
    paths: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # which run lacks what

    def to_dict(self) -> dict:
        return {"paths": [str(p) for p in self.paths], "notes": self.notes}


def load_run(path: str | os.PathLike[str]) -> RunCurves | None:
    """A run's history and markers, or None when it has no finished epoch yet."""
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
    summary = {}
    if (folder / "run.json").is_file():
        try:
            summary = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        except ValueError:
            summary = {}
    best = min(history, key=lambda r: r.val_loss).epoch
    return RunCurves(folder, folder.name, history, summary.get("best_epoch", best), summary.get("stop_reason"))


def plot_runs(
    runs: list[str | os.PathLike[str]],
    out: str | os.PathLike[str] | None = None,
    metric: str = "all",
    force: bool = False,
) -> PlotResult:
    """Draw the learning curves of ``runs`` (overlaid) and each run's confusion matrix when it has an eval report,
    all into the first run's folder (or ``out``'s).

    Raises:
        ConfigError: bad metric or output extension.
        DatasetError: no run has a history.
        OutputExistsError: a figure exists and ``force`` is false.
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown --metric {metric!r}: choose one of {', '.join(METRICS)}")
    if not runs:
        raise ConfigError("give at least one run folder")
    result = PlotResult()
    loaded = []
    for run in runs:
        curves = load_run(run)
        if curves is None:
            result.notes.append(f"{run} has no finished epoch yet (no {HISTORY_NAME}): left out of the curves")
        else:
            if curves.stop_reason is None:
                result.notes.append(
                    f"{run} is still training or was interrupted: curves show {len(curves.history)} epoch(s)"
                )
            loaded.append(curves)
    if not loaded:
        raise DatasetError(f"nothing to plot: none of {', '.join(map(str, runs))} has finished an epoch")
    _unique_names(loaded)

    first = Path(runs[0]) if Path(runs[0]).is_dir() else Path(runs[0]).parent
    target = Path(out) if out else first / ("curves.png" if len(runs) == 1 else "curves-compare.png")
    fmt = FORMATS.get(target.suffix.lower())
    if fmt is None:
        raise ConfigError(f"cannot write {target}: use a .png, .svg or .pdf file name")
    jobs = [(target, fmt, lambda: curves_figure(loaded, metric))]
    for curves in loaded:
        report = _eval_report(curves.path)
        if report is None:
            result.notes.append(
                f"{curves.path} has no eval report: no confusion matrix (run 'resnet eval {curves.path}')"
            )
            continue
        split, doc = report
        # Everything goes beside the curves: one run's figure is confusion-<split>; with several runs each
        # figure carries its run's name, so a comparison never touches another run's folder.
        name = f"confusion-{split}" if len(loaded) == 1 else f"confusion-{_slug(curves.name)}-{split}"
        path = target.parent / f"{name}.{fmt}"
        jobs.append(
            (path, fmt, lambda doc=doc, name=curves.name, split=split: confusion_figure(doc, f"{name}: {split}"))
        )
    for path, _, _ in jobs:
        refuse_overwrite(path, force, "figure")
    for path, fmt_, make in jobs:
        figure = make()
        atomic_write_with(
            path, lambda handle, figure=figure, fmt_=fmt_: figure.savefig(handle, format=fmt_, metadata=_METADATA[fmt_])
        )
        result.paths.append(path)
    return result


def curves_figure(runs: list[RunCurves], metric: str = "all"):
    from matplotlib.figure import Figure

    panels = {"all": ["loss", "acc", "gap", "lr"], "loss": ["loss", "gap"], "acc": ["acc"], "lr": ["lr"]}[metric]
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + 1) // 2 if len(panels) > 1 else 1
    figure = Figure(figsize=(6.5 * cols, 4.2 * rows), dpi=100, layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    colours = [f"C{i}" for i in range(10)]
    for ax, panel in zip(axes, panels, strict=False):
        for i, run in enumerate(runs):
            _draw(ax, panel, run, colours[i % len(colours)])
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if panel == "loss":
            ax.set_yscale("log")
            series = [[r.train_loss for r in run.history] for run in runs]
            series += [[r.val_loss for r in run.history] for run in runs]
            _robust_limits(ax, series, log=True)
        elif panel == "gap":
            _robust_limits(ax, [[r.val_loss - r.train_loss for r in run.history] for run in runs])
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    title = " vs ".join(r.name for r in runs)
    figure.suptitle(f"learning curves: {title}", fontsize=13)
    figure.legend(
        handles=_legend_handles(runs, colours), loc="outside lower center", ncols=min(6, len(runs) + 5), fontsize=9
    )
    return figure


def _legend_handles(runs: list[RunCurves], colours: list[str]) -> list:
    """One entry per run (its colour) and one per line style, instead of a legend per panel."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=colours[i % len(colours)], linewidth=3, label=run.name) for i, run in enumerate(runs)
    ]
    handles += [
        Line2D([], [], color="black", linestyle="--", label="train"),
        Line2D([], [], color="black", linestyle="-", label="validation"),
        Line2D(
            [],
            [],
            color="black",
            marker="o",
            linestyle="",
            markerfacecolor="none",
            markeredgewidth=2,
            label="best epoch",
        ),
        Line2D([], [], color="black", linestyle=":", label="learning-rate reduction"),
    ]
    if any(r.stop_reason == "early_stop" for r in runs):
        handles.append(Line2D([], [], color="black", marker="X", linestyle="", label="early stop"))
    return handles


def _robust_limits(ax, series: list[list[float]], log: bool = False) -> None:
    """Keep a huge first-epoch value from flattening every later curve: limits come from epoch 2 on."""
    values = [v for s in series for v in (s[1:] if len(s) > 3 else s)]
    if not values:
        return
    lo, hi = min(values), max(values)
    if log:
        lo = max(lo, 1e-4)
        ax.set_ylim(lo / 1.5, hi * 1.5)
    else:
        pad = 0.1 * (hi - lo or abs(hi) or 1.0)
        ax.set_ylim(lo - pad, hi + pad)


def _draw(ax, panel: str, run: RunCurves, colour: str) -> None:
    epochs = [r.epoch for r in run.history]
    name = run.name
    if panel == "loss":
        ax.plot(epochs, [r.train_loss for r in run.history], "--", color=colour, label=f"{name} train")
        ax.plot(epochs, [r.val_loss for r in run.history], "-", color=colour, label=f"{name} val")
        ax.set_title("loss (log scale)")
        ax.set_ylabel("cross-entropy")
        _markers(ax, run, [r.val_loss for r in run.history], colour)
    elif panel == "acc":
        ax.plot(epochs, [100 * r.train_acc for r in run.history], "--", color=colour, label=f"{name} train")
        ax.plot(epochs, [100 * r.val_acc for r in run.history], "-", color=colour, label=f"{name} val")
        ax.set_title("accuracy")
        ax.set_ylabel("accuracy (%)")
        _markers(ax, run, [100 * r.val_acc for r in run.history], colour)
    elif panel == "gap":
        gap = [r.val_loss - r.train_loss for r in run.history]
        ax.plot(epochs, gap, "-", color=colour, label=f"{name} val - train")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_title("generalisation gap (validation minus training loss)")
        ax.set_ylabel("loss difference")
    elif panel == "lr":
        ax.plot(epochs, [r.lr for r in run.history], "-", color=colour, drawstyle="steps-post", label=f"{name} lr")
        ax.set_yscale("log")
        ax.set_title("learning rate (log scale; triangles: reductions)")
        ax.set_ylabel("learning rate")
        drops = run.lr_drops
        if drops:
            by_epoch = {r.epoch: r.lr for r in run.history}
            ax.plot(drops, [by_epoch[e] for e in drops], "v", color=colour, markersize=7)


def _markers(ax, run: RunCurves, values: list[float], colour: str) -> None:
    by_epoch = dict(zip([r.epoch for r in run.history], values, strict=True))
    if run.best_epoch in by_epoch:
        ax.plot(
            [run.best_epoch],
            [by_epoch[run.best_epoch]],
            "o",
            color=colour,
            markersize=8,
            markerfacecolor="none",
            markeredgewidth=2,
            label=f"{run.name} best epoch",
        )
    for epoch in run.lr_drops:
        ax.axvline(epoch, color=colour, linestyle=":", linewidth=1, alpha=0.7)
    if run.stop_reason == "early_stop":
        last = run.history[-1].epoch
        ax.plot([last], [by_epoch[last]], "X", color=colour, markersize=9, label=f"{run.name} early stop")


def confusion_figure(report: dict, title: str):
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


def _eval_report(folder: Path) -> tuple[str, dict] | None:
    for split in ("test", "val", "train"):
        path = folder / f"eval-{split}.json"
        if path.is_file():
            try:
                return split, json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                continue
    return None


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_") or "run"


def _unique_names(runs: list[RunCurves]) -> None:
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        for run in runs:
            run.name = str(run.path)

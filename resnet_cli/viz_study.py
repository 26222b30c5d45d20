"""Figures of a study (``resnet plot STUDY_DIR``): mean learning curves with ±1 std bands, test accuracy and the
generalisation gap against the train fraction, and reliability diagrams pooled over seeds.

They are drawn from :class:`resnet_cli.engine.study_report.StudyReport` and the run folders' histories, into the
study folder, and redrawn freely (the study folder is the tool's own).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_cli.engine.study_report import StudyReport
from resnet_cli.fs import atomic_write_with
from resnet_cli.io.history import EpochRecord, read_history
from resnet_cli.viz import _save_figure, reliability_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def study_figures(report: StudyReport) -> list[Path]:
    """Draw every figure of the study into its folder and return the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    paths: list[Path] = []
    labels = [spec.label for spec in report.plan.archs]
    for fraction in report.plan.fractions:
        histories = _histories(report, fraction)
        if any(histories.values()):
            paths.append(_write(report.study_dir / f"study-curves-f{fraction:g}.png", _curves(histories, fraction)))
    if report.records:
        paths.append(_write(report.study_dir / "study-accuracy.png", _by_fraction(report, labels, "test_top1")))
        paths.append(_write(report.study_dir / "study-gap.png", _by_fraction(report, labels, "gap_acc_best")))
    for fraction in report.plan.fractions:
        pooled = {label: _pooled_bins(report, label, fraction) for label in labels}
        pooled = {label: bins for label, bins in pooled.items() if bins}
        if pooled:
            path = report.study_dir / f"study-reliability-f{fraction:g}.png"
            title = f"{report.plan.eval_split} part, {fraction:g} of the train part, pooled over seeds"
            paths.append(reliability_figure(pooled, title, path))
    return paths


def _write(path: Path, figure: Figure) -> Path:
    atomic_write_with(path, functools.partial(_save_figure, figure, "png"))
    return path


def _histories(report: StudyReport, fraction: float) -> dict[str, list[list[EpochRecord]]]:
    found: dict[str, list[list[EpochRecord]]] = {spec.label: [] for spec in report.plan.archs}
    for record in report.records:
        if record.fraction == fraction:
            found[record.label].append(read_history(report.study_dir / "runs" / record.name))
    return found


def _band(runs: list[list[EpochRecord]], field: str) -> tuple[list[int], list[float], list[float]]:
    """Per epoch: the mean and std over the runs that reached it (early stopping ends runs at different epochs)."""
    import numpy as np

    epochs = sorted({r.epoch for run in runs for r in run})
    means, stds = [], []
    for epoch in epochs:
        values = [getattr(r, field) for run in runs for r in run if r.epoch == epoch and getattr(r, field) is not None]
        means.append(float(np.mean(values)) if values else float("nan"))
        stds.append(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
    return epochs, means, stds


def _curves(histories: dict[str, list[list[EpochRecord]]], fraction: float) -> Figure:
    import matplotlib.pyplot as plt

    figure, (loss_axes, acc_axes) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    every = [r for runs in histories.values() for run in runs for r in run]
    honest = all(r.train_eval_loss is not None for r in every)
    for i, (label, runs) in enumerate(histories.items()):
        if not runs:
            continue
        colour = colours[i % len(colours)]
        for axes, metric in ((loss_axes, "loss"), (acc_axes, "acc")):
            train_field = f"train_eval_{metric}" if honest else f"train_{metric}"
            for field, style, name in ((train_field, "--", "train"), (f"val_{metric}", "-", "val")):
                epochs, mean, std = _band(runs, field)
                axes.plot(epochs, mean, style, color=colour, marker="o", markersize=3, label=f"{label} {name}")
                low = [m - s for m, s in zip(mean, std, strict=True)]
                high = [m + s for m, s in zip(mean, std, strict=True)]
                axes.fill_between(epochs, low, high, color=colour, alpha=0.15, linewidth=0)
    for axes, name in ((loss_axes, "cross-entropy loss"), (acc_axes, "accuracy")):
        axes.set_xlabel("epoch")
        axes.set_ylabel(name)
        axes.grid(True, alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
    acc_axes.legend(fontsize=8)
    train = "the eval-mode train subset" if honest else "running averages over augmented batches (biased)"
    figure.suptitle(
        f"mean over seeds ± 1 std, {fraction:g} of the train part (train dashed: {train}; val solid)", fontsize=10
    )
    return figure


def _by_fraction(report: StudyReport, labels: list[str], metric: str) -> Figure:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for label in labels:
        groups = [g for g in report.groups if g.label == label and g.stats[metric].mean is not None]
        if not groups:
            continue
        xs = [g.fraction for g in groups]
        ys = [100 * (g.stats[metric].mean or 0.0) for g in groups]
        errors = [100 * (g.stats[metric].ci95 or 0.0) for g in groups]
        axes.errorbar(xs, ys, yerr=errors, marker="o", capsize=4, label=label)
    axes.set_xscale("log")
    fractions = report.plan.fractions
    axes.set_xticks(fractions, [f"{f:g}" for f in fractions])
    axes.minorticks_off()
    axes.set_xlabel("fraction of the train part (log scale)")
    split = report.plan.eval_split
    name = f"{split} top-1 accuracy (%)" if metric == "test_top1" else "accuracy gap, train - val (points)"
    axes.set_ylabel(name)
    if metric != "test_top1":
        axes.axhline(0, color="grey", linewidth=0.8)
    axes.grid(True, alpha=0.3)
    axes.legend()
    axes.set_title("mean over seeds, error bars: 95% CI (Student's t)", fontsize=10)
    return figure


def _pooled_bins(report: StudyReport, label: str, fraction: float) -> list[dict[str, Any]]:
    """The reliability bins of every seed's eval report, pooled: counts summed, confidence and accuracy weighted
    by count."""
    import json

    pooled: list[dict[str, Any]] = []
    for record in report.records:
        if record.label != label or record.fraction != fraction:
            continue
        path = report.study_dir / "runs" / record.name / f"eval-{report.plan.eval_split}.json"
        bins = json.loads(path.read_text(encoding="utf-8")).get("reliability")
        if not isinstance(bins, list):
            continue
        if not pooled:
            pooled = [{"lower": b["lower"], "upper": b["upper"], "count": 0, "conf": 0.0, "acc": 0.0} for b in bins]
        for total, b in zip(pooled, bins, strict=True):
            if b["count"]:
                total["count"] += b["count"]
                total["conf"] += b["confidence"] * b["count"]
                total["acc"] += b["accuracy"] * b["count"]
    return [
        {
            "lower": b["lower"],
            "upper": b["upper"],
            "count": b["count"],
            "confidence": b["conf"] / b["count"] if b["count"] else None,
            "accuracy": b["acc"] / b["count"] if b["count"] else None,
        }
        for b in pooled
    ]

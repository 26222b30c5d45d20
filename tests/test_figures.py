"""The curves figure read through matplotlib's objects (Figure, Axes, Line2D), not its pixels: ticks, markers,
the zero line, limits, log labels, progress notes and the honest generalisation gap."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from resnet_cli.io.history import EpochRecord, write_history
from resnet_cli.viz import curves_figure, load_run, plot_runs
from tests.test_plot import fake_history, foreign_run, our_run


def drawn(runs: list[Path], metric: str = "all"):
    """The figure ``resnet plot`` would save for ``runs``, laid out (ticks and labels computed)."""
    figure = curves_figure([load_run(r) for r in runs], metric)
    figure.draw_without_rendering()
    return figure


def panel(figure, title_start: str):
    matches = [ax for ax in figure.axes if ax.get_visible() and ax.get_title().startswith(title_start)]
    assert len(matches) == 1, [ax.get_title() for ax in figure.axes]
    return matches[0]


def series_lines(ax) -> list:
    """The data lines of a panel (reference lines such as the zero line carry labels starting with '_')."""
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def zero_lines(ax) -> list:
    return [line for line in ax.get_lines() if list(line.get_ydata()) == [0, 0] and list(line.get_xdata()) == [0, 1]]


def visible_xticks(ax) -> list[float]:
    lo, hi = ax.get_xlim()
    return [t for t in ax.get_xticks() if lo <= t <= hi]


def check_readable(figure) -> None:
    """Integer epoch ticks and a marker on every series in every panel; zero in view and drawn on the gap axes."""
    for ax in (ax for ax in figure.axes if ax.get_visible()):
        ticks = visible_xticks(ax)
        assert ticks and all(float(t).is_integer() for t in ticks), (ax.get_title(), ticks)
        lines = series_lines(ax)
        assert lines, ax.get_title()
        for line in lines:
            assert line.get_marker() not in ("", "None", " ", None), (ax.get_title(), line.get_label())
    for title in ("generalisation gap: validation minus train loss", "generalisation gap: train minus validation"):
        gap = panel(figure, title)
        lo, hi = gap.get_ylim()
        assert lo < 0 < hi
        assert len(zero_lines(gap)) == 1 and zero_lines(gap)[0].get_linewidth() >= 1


def test_a_one_epoch_run_shows_points_on_integer_ticks(tmp_path):
    run = our_run(tmp_path / "r", 1, 30)
    figure = drawn([run])
    check_readable(figure)
    assert visible_xticks(panel(figure, "loss")) == [1]
    val = next(line for line in series_lines(panel(figure, "loss")) if line.get_linestyle() == "-")
    assert list(val.get_xdata()) == [1]


def test_a_comparison_is_readable_and_one_outlier_does_not_flatten_the_gap(tmp_path):
    steady = fake_history(tmp_path / "steady", 12, seed=1)
    spiky = tmp_path / "spiky"
    spiky.mkdir()
    # Epoch 1 of this short run is wildly off: validation loss 6 against training 0.5.
    write_history(
        spiky / "history.csv",
        [EpochRecord(1, 0.5, 0.8, 6.0, 0.2, 1e-3), EpochRecord(2, 0.4, 0.85, 0.5, 0.82, 1e-3)],
    )
    figure = drawn([steady, spiky])
    check_readable(figure)
    gap = panel(figure, "generalisation gap: validation minus train loss")
    steady_gaps = [r.val_loss - r.train_loss for r in load_run(steady).history[1:]]
    lo, hi = gap.get_ylim()
    assert hi < 1.0  # not stretched to 5.5 by the other run's first epoch
    assert lo <= min(steady_gaps) and max(steady_gaps) <= hi  # the steady run's curve stays in view
    assert any("left out of view" in t.get_text() for t in gap.texts)  # and the figure says something is cut


def test_identical_learning_rate_curves_stay_distinguishable(tmp_path):
    a = fake_history(tmp_path / "a", 6, drop_at=4, seed=1)
    b = fake_history(tmp_path / "b", 6, drop_at=4, seed=2)
    lr = panel(drawn([a, b]), "learning rate")
    lines = series_lines(lr)
    assert len(lines) == 2 and list(lines[0].get_ydata()) == list(lines[1].get_ydata())
    first, second = lines
    assert first.get_marker() != second.get_marker()
    # The curve drawn underneath is the wider one, so the one on top leaves its edges visible.
    assert first.get_zorder() < second.get_zorder() and first.get_linewidth() > second.get_linewidth()


def test_log_axes_have_plain_decimal_labels(tmp_path):
    run = fake_history(tmp_path / "r", 12, seed=3)  # losses within about one decade: minor ticks get labels
    figure = drawn([run])
    for title in ("loss", "learning rate"):
        ax = panel(figure, title)
        assert ax.get_yscale() == "log"
        labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) if t.get_text()]
        assert labels, title
        for label in labels:
            assert not any(mark in label for mark in ("$", "^", "×", "e-", "e+")), label
            float(label)
    loss_labels = {t.get_text() for t in panel(figure, "loss").get_yticklabels(minor=True)}
    assert "0.6" in loss_labels or "0.5" in loss_labels
    assert "0.001" in {t.get_text() for t in panel(figure, "learning rate").get_yticklabels()}


def test_partial_runs_say_so_in_the_figure(tmp_path):
    from resnet_cli.fs import run_lock

    def legend_texts(figure) -> list[str]:
        return [t.get_text() for legend in figure.legends for t in legend.get_texts()]

    stopped = our_run(tmp_path / "stopped", 3, 30)
    finished = our_run(tmp_path / "done", 4, 4, finished=True)
    foreign = foreign_run(tmp_path / "elsewhere", 5)
    figure = drawn([stopped, finished, foreign])
    assert "stopped (stopped at epoch 3 of 30)" in legend_texts(figure)
    assert "done" in legend_texts(figure) and "elsewhere" in legend_texts(figure)  # nothing added to those
    assert "stopped at epoch 3 of 30" in figure.get_suptitle()

    with run_lock(stopped, "train"):
        live = drawn([stopped])
    assert "training, epoch 3 of 30" in live.get_suptitle()
    assert "stopped (training, epoch 3 of 30)" in legend_texts(live)

    # An extended run (train --resume --epochs 8) keeps the old run.json until it finishes again.
    our_run(tmp_path / "done", 6, 8)
    assert "stopped at epoch 6 of 8" in drawn([finished]).get_suptitle()


def _honest_run(folder: Path) -> Path:
    """Running train loss above validation (augmentation, train mode), the eval-mode subset below it."""
    records = [
        EpochRecord(e, 1.0 / e + 0.3, 0.6, 1.0 / e + 0.1, 0.7, 1e-3, None, None, 1.0 / e, 0.75 + 0.01 * e)
        for e in range(1, 7)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    write_history(folder / "history.csv", records)
    return folder


def test_gap_comes_from_the_eval_mode_train_subset_when_recorded(tmp_path):
    run = _honest_run(tmp_path / "new")
    history = load_run(run).history
    figure = drawn([run])
    gap = panel(figure, "generalisation gap: validation minus train loss")
    assert "eval mode" in gap.get_title() and "biased" not in gap.get_title()
    (line,) = series_lines(gap)
    assert list(line.get_ydata()) == pytest.approx([r.val_loss - r.train_eval_loss for r in history])
    assert all(v > 0 for v in line.get_ydata())  # honest: positive, where the running figures say negative
    acc_gap = panel(figure, "generalisation gap: train minus validation accuracy")
    (acc_line,) = series_lines(acc_gap)
    assert list(acc_line.get_ydata()) == pytest.approx([100 * (r.train_eval_acc - r.val_acc) for r in history])
    # The loss and accuracy panels show the eval-mode train curve beside the running one, in another style.
    for title, values in (
        ("loss", [r.train_eval_loss for r in history]),
        ("accuracy", [100 * r.train_eval_acc for r in history]),
    ):
        styles = {line.get_linestyle(): list(line.get_ydata()) for line in series_lines(panel(figure, title))}
        assert len({"--", "-.", "-"} & set(styles)) == 3
        assert styles["-."] == pytest.approx(values)


def test_gap_without_eval_mode_figures_says_it_is_biased(tmp_path):
    run = foreign_run(tmp_path / "old", 5)
    history = load_run(run).history
    figure = drawn([run])
    gap = panel(figure, "generalisation gap: validation minus train loss")
    assert "from running train averages (biased)" in gap.get_title()
    (line,) = series_lines(gap)
    assert list(line.get_ydata()) == pytest.approx([r.val_loss - r.train_loss for r in history])
    assert len(series_lines(panel(figure, "loss"))) == 2  # running train and validation only


def test_history_without_learning_rate_still_plots(tmp_path):
    run = foreign_run(tmp_path / "keras", 4)
    lr = panel(drawn([run]), "learning rate")
    assert any("no learning rate recorded" in t.get_text() for t in lr.texts)
    result = plot_runs([run])
    assert result.paths == [run / "curves.png"] and result.warnings == []
    assert json.loads((run / ".resnet-files.json").read_text())["files"] == ["curves.png"]
    assert not math.isnan(load_run(run).history[0].train_loss)

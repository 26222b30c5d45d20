"""Plots: real image files with curves actually drawn, overlays, partial runs, confusion matrices."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet_cli.io.history import EpochRecord, read_history, write_history
from tests.conftest import run_cli


def fake_history(
    folder: Path, epochs: int, drop_at: int | None = None, seed: int = 0, eval_mode: bool = False, lr: bool = True
) -> Path:
    """A history file with plausible curves (the plot only reads history.csv and, for our runs, the JSON files)."""
    rng = np.random.default_rng(seed)
    records = []
    for e in range(1, epochs + 1):
        rate = 1e-3 if drop_at is None or e < drop_at else 1e-4
        train = 2.0 / e + 0.02 * rng.random()
        val = 2.0 / e + 0.05 * e / epochs + 0.02 * rng.random()
        extra = (0.8 * train, 1 - 0.8 * train / 3) if eval_mode else (None, None)
        records.append(EpochRecord(e, train, 1 - train / 3, val, 1 - val / 3, rate if lr else None, 1.0, 100.0, *extra))
    folder.mkdir(parents=True, exist_ok=True)
    write_history(folder / "history.csv", records)
    return folder


def our_run(folder: Path, epochs: int, planned: int, finished: bool = False, **kwargs) -> Path:
    """A run folder as `resnet train` leaves it: history.csv, config.json and, once finished, run.json."""
    fake_history(folder, epochs, **kwargs)
    config = {"train": {"arch": "18", "epochs": planned}, "model": {"arch": "resnet18", "num_classes": 10}}
    (folder / "config.json").write_text(json.dumps(config))
    if finished:
        summary = {"epochs_run": epochs, "best_epoch": epochs, "stop_reason": "completed", "finished": True}
        (folder / "run.json").write_text(json.dumps(summary))
    return folder


def foreign_run(folder: Path, epochs: int) -> Path:
    """A history from elsewhere: only the required columns, none of our files."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["epoch,train_loss,train_acc,val_loss,val_acc"]
    rows += [f"{e},{1.5 / e:.4f},{0.5 + e / 50:.4f},{1.6 / e:.4f},{0.48 + e / 50:.4f}" for e in range(1, epochs + 1)]
    (folder / "history.csv").write_text("\n".join(rows) + "\n")
    return folder


def coloured_pixels(path: Path) -> int:
    """Pixels that are clearly neither white, black nor grey: drawn lines, not axes or text."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    return int((spread > 60).sum())


def test_curves_of_a_real_run(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    proc = run_cli("plot", run)
    assert proc.returncode == 0, proc.stderr
    path = run / "curves.png"
    assert proc.stdout.strip().splitlines() == [str(path)]
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= 1000 and image.height >= 700
    assert coloured_pixels(path) > 2000
    assert "no eval report" in proc.stderr  # says what it lacks
    assert "curves.png" in json.loads((run / ".resnet-files.json").read_text())["files"]


def test_empty_axes_are_not_enough():
    # The pixel check itself must fail on a figure without curves.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    figure.subplots().set_title("empty")
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    buffer.seek(0)
    rgb = np.asarray(Image.open(buffer).convert("RGB")).astype(int)
    assert int(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).sum()) < 50


def test_overlay_of_two_runs_and_formats(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    a = fake_history(tmp_path / "r34", 12, drop_at=8, seed=1)
    b = fake_history(tmp_path / "r50", 9, seed=2)
    (b / "run.json").write_text(json.dumps({"stop_reason": "early_stop", "best_epoch": 6}))
    proc = run_cli("plot", a, b)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "curves-compare.png"
    overlay = work / "curves-compare.png"
    single = fake_history(tmp_path / "solo", 12, drop_at=8, seed=1)
    assert run_cli("plot", single).returncode == 0
    # Two runs draw more coloured curve pixels than one.
    assert coloured_pixels(overlay) > 1.3 * coloured_pixels(single / "curves.png")
    for suffix in (".svg", ".pdf"):
        out = tmp_path / f"loss{suffix}"
        proc = run_cli("plot", a, b, "--metric", "loss", "--out", out)
        assert proc.returncode == 0, proc.stderr
        head = out.read_bytes()[:200]
        assert (b"<svg" in head or b"<?xml" in head) if suffix == ".svg" else head.startswith(b"%PDF")


def test_comparison_goes_where_out_says_and_leaves_the_runs_alone(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    a = our_run(tmp_path / "a", 5, 5, finished=True)
    b = our_run(tmp_path / "b", 4, 4, finished=True)
    weights = a / "best.pt"
    weights.write_bytes(b"weights of run a")
    (a / "eval-test.json").write_text(json.dumps(_eval_doc(weights)))
    before = {p: sorted(x.name for x in p.iterdir()) for p in (a, b)}

    proc = run_cli("plot", a, b)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["curves-compare.png"]
    assert sorted(x.name for x in work.iterdir()) == ["curves-compare.png"]  # no single-run figure copied here
    assert {p: sorted(x.name for x in p.iterdir()) for p in (a, b)} == before  # no run folder touched

    out = tmp_path / "figs" / "ab.svg"
    proc = run_cli("plot", a, b, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(out)]
    assert sorted(x.name for x in out.parent.iterdir()) == ["ab.svg"]
    # A comparison outside any run folder is the user's file: redrawing it needs --force.
    again = run_cli("plot", a, b)
    assert again.returncode == 2 and "--force" in again.stderr
    assert run_cli("plot", a, b, "--force").returncode == 0


def test_partial_run_and_run_without_history(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    partial = our_run(tmp_path / "training", 3, 30)
    fresh = tmp_path / "fresh"  # a run before its first epoch: config.json, no history yet
    fresh.mkdir()
    (fresh / "config.json").write_text((partial / "config.json").read_text())
    proc = run_cli("plot", partial, fresh)
    assert proc.returncode == 0, proc.stderr
    assert "stopped at epoch 3 of 30" in proc.stderr and "has no finished epoch" in proc.stderr
    nothing = run_cli("plot", fresh, "--out", tmp_path / "x.png")
    assert nothing.returncode == 2 and "nothing to plot" in nothing.stderr and "has no finished epoch" in nothing.stderr
    other = tmp_path / "photos"  # not a run at all
    other.mkdir()
    refused = run_cli("plot", other)
    assert refused.returncode == 2 and f"{other} is not a run folder" in refused.stderr


def test_an_unfinished_ema_run_marks_the_epoch_its_moving_average_chose(tmp_path):
    from resnet_cli.viz import load_run

    folder = our_run(tmp_path / "ema", 3, 10)  # raw val loss falls every epoch (lowest at 3)
    records = [
        replace(record, ema_val_loss=ema_loss, ema_val_acc=0.9)
        for record, ema_loss in zip(read_history(folder / "history.csv"), (0.9, 0.4, 0.6), strict=True)
    ]
    write_history(folder / "history.csv", records)
    run = load_run(folder)
    assert run is not None and not run.finished and run.best_epoch == 2  # where best.pt was written

    # The moving average's validation curve is drawn, and the best-epoch ring sits on it, not on the raw curve.
    from resnet_cli.viz import curves_figure

    loss_panel = curves_figure([run], "loss").axes[0]
    ema_lines = [line for line in loss_panel.get_lines() if list(line.get_ydata()) == [0.9, 0.4, 0.6]]
    assert len(ema_lines) == 1 and ema_lines[0].get_label().endswith(" loss ema")
    rings = [line for line in loss_panel.get_lines() if line.get_marker() == "o" and len(line.get_xdata()) == 1]
    assert [(list(r.get_xdata()), list(r.get_ydata())) for r in rings] == [([2], [0.4])]
    labels = [h.get_label() for h in loss_panel.figure.legends[0].legend_handles]
    assert "validation, moving average" in labels


@pytest.mark.parametrize(("schedule", "drops"), [("cosine", []), ("plateau", [2, 3, 4]), (None, [2, 3, 4])])
def test_only_cuts_of_the_learning_rate_are_marked_as_reductions(tmp_path, schedule, drops):
    from resnet_cli.viz import load_run

    folder = our_run(tmp_path / "run", 4, 4)
    records = [replace(r, lr=1e-3 / 2**i) for i, r in enumerate(read_history(folder / "history.csv"))]
    write_history(folder / "history.csv", records)  # the rate falls every epoch
    config = json.loads((folder / "config.json").read_text())
    if schedule:
        config["train"]["schedule"] = schedule
    (folder / "config.json").write_text(json.dumps(config))
    run = load_run(folder)
    assert run is not None and run.lr_drops == drops  # a cosine decays; a plateau (or a 0.1.0 run) cuts


def test_figures_of_a_run_are_redrawn_without_force_user_files_are_not(tmp_path):
    run = our_run(tmp_path / "r", 4, 10)
    first = run_cli("plot", run)
    assert first.returncode == 0, first.stderr
    our_run(tmp_path / "r", 5, 10)  # one more epoch since
    again = run_cli("plot", run)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [str(run / "curves.png")]
    # --out inside the run folder is a figure the tool derived too.
    assert run_cli("plot", run, "--out", run / "loss.svg", "--metric", "loss").returncode == 0
    assert run_cli("plot", run, "--out", run / "loss.svg", "--metric", "loss").returncode == 0

    mine = fake_history(tmp_path / "mine", 4)
    (mine / "curves.png").write_bytes(b"a figure I drew myself")
    refused = run_cli("plot", mine)
    assert refused.returncode == 2 and "--force" in refused.stderr and str(mine / "curves.png") in refused.stderr
    assert (mine / "curves.png").read_bytes() == b"a figure I drew myself"
    assert run_cli("plot", mine, "--force").returncode == 0
    assert Image.open(mine / "curves.png").format == "PNG"


def test_plot_works_while_training_holds_the_run(tmp_path):
    from resnet_cli.fs import run_lock

    run = our_run(tmp_path / "live", 3, 30)
    with run_lock(run, "train"):
        first = run_cli("plot", run)
        assert first.returncode == 0, first.stderr
        assert "training, epoch 3 of 30" in first.stderr
        assert "once training has finished" in first.stderr
        our_run(tmp_path / "live", 4, 30)
        second = run_cli("plot", run)
        assert second.returncode == 0, second.stderr
        assert "training, epoch 4 of 30" in second.stderr


def test_foreign_history_gets_no_false_notes(tmp_path):
    run = foreign_run(tmp_path / "keras-run", 6)
    proc = run_cli("plot", run)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(run / "curves.png")]
    for false_claim in ("training", "interrupted", "stopped", "resnet eval"):
        assert false_claim not in proc.stderr


def test_quiet_keeps_warnings_only_and_json_keeps_stderr(tmp_path):
    run = our_run(tmp_path / "r", 3, 30)  # stopped early, no eval report: two notes
    quiet = run_cli("plot", run, "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""
    loud = run_cli("plot", run, "--json")
    assert loud.returncode == 0
    doc = json.loads(loud.stdout)
    assert doc["paths"] == [str(run / "curves.png")] and doc["warnings"] == []
    assert any("stopped at epoch 3 of 30" in n for n in doc["notes"])
    assert "stopped at epoch 3 of 30" in loud.stderr  # --json changes stdout only


def _eval_doc(weights: Path) -> dict:
    from resnet_cli.io.weights import file_sha256

    return {
        "weights": str(weights),
        "weights_sha256": file_sha256(weights),
        "split": "test",
        "classes": ["cat", "dog"],
        "confusion_matrix": [[5, 1], [2, 4]],
        "top1": 0.75,
    }


def test_stale_eval_report_draws_no_confusion_matrix(tmp_path):
    run = our_run(tmp_path / "r", 4, 4, finished=True)
    weights = run / "best.pt"
    weights.write_bytes(b"the best weights of epoch 4")
    (run / "eval-test.json").write_text(json.dumps(_eval_doc(weights)))
    fresh = run_cli("plot", run)
    assert fresh.returncode == 0, fresh.stderr
    confusion = run / "confusion-test.png"
    assert fresh.stdout.splitlines() == [str(run / "curves.png"), str(confusion)]
    assert "is stale" not in fresh.stderr  # (the test folder name holds "stale")

    weights.write_bytes(b"the best weights of epoch 9, after train --resume --epochs 10")
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"my own figure")
    refused = run_cli("plot", run, "--out", mine)
    assert refused.returncode == 2 and confusion.exists()  # nothing removed before every check has passed
    stale = run_cli("plot", run, "--quiet")
    assert stale.returncode == 0, stale.stderr
    assert stale.stdout.splitlines() == [str(run / "curves.png")]
    assert "warning:" in stale.stderr and "eval-test.json is stale: best.pt changed since" in stale.stderr
    assert f"resnet eval {run}" in stale.stderr
    assert not confusion.exists()  # the out-of-date figure the tool drew is gone, not left looking current

    weights.unlink()
    gone = run_cli("plot", run)
    assert gone.returncode == 0 and "best.pt is gone" in gone.stderr
    assert not confusion.exists()


def test_metric_completion_and_examples_one_per_line():
    from typer.main import get_command

    from resnet_cli.cli.app import app

    command = get_command(app).commands["plot"]
    metric = next(p for p in command.params if p.name == "metric")
    context = command.make_context("plot", ["run"], resilient_parsing=True)
    assert [c.value for c in metric.shell_complete(context, "l")] == ["loss", "lr"]
    assert [c.value for c in metric.shell_complete(context, "")] == ["all", "loss", "acc", "lr"]

    proc = run_cli("plot", "--help", env={"COLUMNS": "200"})
    assert proc.returncode == 0
    examples = [line.strip() for line in proc.stdout.splitlines() if "resnet plot runs/" in line]
    assert examples == [
        "resnet plot runs/r34",
        "resnet plot runs/r34 --metric loss --out loss.svg",
        "resnet plot runs/r34 runs/r50 --out compare.png",
    ]
    assert " | " not in proc.stdout.split("Examples")[-1]


def test_refuses_bad_options(tmp_path):
    run = fake_history(tmp_path / "r", 4)
    bad = run_cli("plot", run, "--out", tmp_path / "x.gif")
    assert bad.returncode == 2 and ".png, .svg or .pdf" in bad.stderr
    metric = run_cli("plot", run, "--metric", "f1")
    assert metric.returncode == 2 and "unknown --metric" in metric.stderr
    missing = run_cli("plot", tmp_path / "nope")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


@pytest.mark.slow
def test_confusion_matrix_from_eval_report(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert run_cli("plot", run).returncode == 0
    assert run_cli("eval", run).returncode == 0
    proc = run_cli("plot", run)  # after eval, without --force
    assert proc.returncode == 0, proc.stderr
    confusion = run / "confusion-test.png"
    assert str(confusion) in proc.stdout.splitlines()
    assert "is stale" not in proc.stderr
    rgb = np.asarray(Image.open(confusion).convert("RGB")).astype(int)
    blue = (rgb[..., 2] - rgb[..., 0]) > 60  # the Blues colormap fills the diagonal
    assert blue.sum() > 1000


# -- reliability diagrams ---------------------------------------------------------------------------------------


def _calibrated_doc(weights: Path) -> dict:
    """An eval report with calibration, its bins made by the same code `resnet eval` uses."""
    import torch

    from resnet_cli.engine.calibration import calibration_summary

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 2, generator=generator) * 4
    targets = torch.randint(0, 2, (300,), generator=generator)
    raw, scaled = calibration_summary(logits, targets), calibration_summary(logits / 2.5, targets)
    return {**_eval_doc(weights), **{k: raw[k] for k in ("nll", "ece", "brier", "reliability")}} | {
        "temperature": 2.5,
        "calibrated": scaled,
    }


def test_reliability_diagram_from_an_eval_report_and_never_from_a_stale_one(tmp_path):
    run = our_run(tmp_path / "r", 4, 4, finished=True)
    weights = run / "best.pt"
    weights.write_bytes(b"the best weights of epoch 4")
    doc = _calibrated_doc(weights)
    (run / "eval-test.json").write_text(json.dumps(doc))
    proc = run_cli("plot", run)
    assert proc.returncode == 0, proc.stderr
    reliability = run / "reliability-test.png"
    assert proc.stdout.splitlines() == [str(run / "curves.png"), str(run / "confusion-test.png"), str(reliability)]
    assert "reliability-test.png" in json.loads((run / ".resnet-files.json").read_text())["files"]
    with Image.open(reliability) as image:
        assert image.width > 1000  # raw and after temperature scaling, side by side
    assert coloured_pixels(reliability) > 20000  # accuracy bars and gaps drawn, not just axes

    only_raw = {k: v for k, v in doc.items() if k not in ("temperature", "calibrated")}
    (run / "eval-test.json").write_text(json.dumps(only_raw))
    assert run_cli("plot", run).returncode == 0
    with Image.open(reliability) as image:
        assert image.width < 1000  # one diagram

    weights.write_bytes(b"the best weights of epoch 9, after train --resume --epochs 10")
    stale = run_cli("plot", run)
    assert stale.returncode == 0, stale.stderr
    assert stale.stdout.splitlines() == [str(run / "curves.png")]
    assert "eval-test.json is stale" in stale.stderr
    assert not reliability.exists()  # the tool's out-of-date figure is removed, not left looking current


def test_an_older_eval_report_without_calibration_draws_no_reliability_diagram(tmp_path):
    run = our_run(tmp_path / "r", 4, 4, finished=True)
    weights = run / "best.pt"
    weights.write_bytes(b"weights")
    (run / "eval-test.json").write_text(json.dumps(_eval_doc(weights)))  # no "reliability"
    proc = run_cli("plot", run)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(run / "curves.png"), str(run / "confusion-test.png")]
    assert "warning" not in proc.stderr and "no reliability diagram" in proc.stderr
    assert not (run / "reliability-test.png").exists()


def test_reliability_figure_overlays_several_models(tmp_path):
    from resnet_cli.errors import ConfigError
    from resnet_cli.viz import reliability_figure

    (tmp_path / "w").write_bytes(b"weights")
    doc = _calibrated_doc(tmp_path / "w")
    one = reliability_figure({"resnet18": doc["reliability"]}, "test", tmp_path / "one.png")
    two = reliability_figure(
        {"resnet18": doc["reliability"], "vit-ti/4": doc["calibrated"]["reliability"]}, "test", tmp_path / "two.png"
    )
    assert one == tmp_path / "one.png" and two.is_file()
    assert coloured_pixels(two) > 1.3 * coloured_pixels(one)
    assert reliability_figure({"a": doc["reliability"]}, "t", tmp_path / "r.svg").read_bytes().startswith(b"<?xml")
    with pytest.raises(ConfigError, match=r"\.png, \.svg or \.pdf"):
        reliability_figure({"a": doc["reliability"]}, "t", tmp_path / "r.gif")
    with pytest.raises(ConfigError, match="'a'"):
        reliability_figure({"a": [{"lower": 0.0}]}, "t", tmp_path / "bad.png")


def test_reliability_diagram_after_a_real_eval(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert run_cli("eval", run, "--temperature").returncode == 0
    proc = run_cli("plot", run)
    assert proc.returncode == 0, proc.stderr
    reliability = run / "reliability-test.png"
    assert str(reliability) in proc.stdout.splitlines()
    assert coloured_pixels(reliability) > 5000
    (run / "best.pt").write_bytes((run / "last.pt").read_bytes() + b"\0")  # the weights changed since the eval
    stale = run_cli("plot", run)
    assert stale.returncode == 0 and "is stale" in stale.stderr
    assert not reliability.exists() and str(reliability) not in stale.stdout

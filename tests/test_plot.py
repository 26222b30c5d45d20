"""Plots: real image files with curves actually drawn, overlays, partial runs, confusion matrices."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet_cli.io.history import EpochRecord, write_history
from tests.conftest import run_cli


def fake_history(folder: Path, epochs: int, drop_at: int | None = None, seed: int = 0) -> Path:
    """A history file with plausible curves (the plot only reads history.csv and run.json)."""
    rng = np.random.default_rng(seed)
    records = []
    for e in range(1, epochs + 1):
        lr = 1e-3 if drop_at is None or e < drop_at else 1e-4
        train = 2.0 / e + 0.02 * rng.random()
        val = 2.0 / e + 0.05 * e / epochs + 0.02 * rng.random()
        records.append(EpochRecord(e, train, 1 - train / 3, val, 1 - val / 3, lr, 1.0, 100.0))
    folder.mkdir(parents=True, exist_ok=True)
    write_history(folder / "history.csv", records)
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


def test_overlay_of_two_runs_and_formats(tmp_path):
    a = fake_history(tmp_path / "r34", 12, drop_at=8, seed=1)
    b = fake_history(tmp_path / "r50", 9, seed=2)
    (b / "run.json").write_text(json.dumps({"stop_reason": "early_stop", "best_epoch": 6}))
    proc = run_cli("plot", a, b)
    assert proc.returncode == 0, proc.stderr
    overlay = a / "curves-compare.png"
    assert proc.stdout.strip() == str(overlay)
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


def test_partial_run_and_run_without_history(tmp_path):
    partial = fake_history(tmp_path / "training", 3)
    empty = tmp_path / "fresh"
    empty.mkdir()
    proc = run_cli("plot", partial, empty)
    assert proc.returncode == 0, proc.stderr
    assert "still training" in proc.stderr and "has no finished epoch" in proc.stderr
    nothing = run_cli("plot", empty, "--out", tmp_path / "x.png")
    assert nothing.returncode == 2 and "nothing to plot" in nothing.stderr


def test_refuses_overwrite_and_bad_options(tmp_path):
    run = fake_history(tmp_path / "r", 4)
    assert run_cli("plot", run).returncode == 0
    again = run_cli("plot", run)
    assert again.returncode == 2 and "--force" in again.stderr
    assert run_cli("plot", run, "--force").returncode == 0
    bad = run_cli("plot", run, "--out", tmp_path / "x.gif")
    assert bad.returncode == 2 and ".png, .svg or .pdf" in bad.stderr
    metric = run_cli("plot", run, "--metric", "f1", "--force")
    assert metric.returncode == 2 and "unknown --metric" in metric.stderr
    missing = run_cli("plot", tmp_path / "nope")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


@pytest.mark.slow
def test_confusion_matrix_from_eval_report(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert run_cli("eval", run).returncode == 0
    proc = run_cli("plot", run)
    assert proc.returncode == 0, proc.stderr
    confusion = run / "confusion-test.png"
    assert str(confusion) in proc.stdout.splitlines()
    rgb = np.asarray(Image.open(confusion).convert("RGB")).astype(int)
    blue = (rgb[..., 2] - rgb[..., 0]) > 60  # the Blues colormap fills the diagonal
    assert blue.sum() > 1000

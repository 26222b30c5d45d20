"""Evaluation reports: internal consistency, agreement with training's validation, hostile checkpoints."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from resnet_cli.engine.evaluate import evaluate
from resnet_cli.io.history import read_history
from tests.conftest import run_cli


@pytest.fixture()
def run_copy(trained_run, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(trained_run, target)
    return target


def one_error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_report_numbers_agree_with_each_other(run_copy, small_split):
    proc = run_cli("eval", run_copy, "--split", "test", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    matrix = doc["confusion_matrix"]
    total = sum(map(sum, matrix))
    test_images = sum(1 for line in (small_split / "manifest.csv").read_text().splitlines() if ",test," in line)
    assert doc["images"] == total == test_images == 40
    assert sum(c["support"] for c in doc["per_class"]) == total
    assert doc["top1"] == pytest.approx(sum(matrix[i][i] for i in range(10)) / total)
    assert doc["top5"] is not None and doc["top5"] >= doc["top1"]
    recalls = [c["recall"] for c in doc["per_class"]]
    assert doc["balanced_accuracy"] == pytest.approx(sum(recalls) / len(recalls))
    assert doc["macro"]["recall"] == pytest.approx(doc["balanced_accuracy"])
    assert doc["images_per_s"] > 0
    # Written beside the weights: the same report, and one prediction per image.
    saved = json.loads((run_copy / "eval-test.json").read_text())
    assert saved["confusion_matrix"] == matrix
    with open(run_copy / "predictions-test.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == total
    assert set(rows[0]) == {"path", "true", "predicted", "confidence", "correct"}
    assert sum(int(r["correct"]) for r in rows) == sum(matrix[i][i] for i in range(10))
    assert all(0 < float(r["confidence"]) <= 1 for r in rows)


def test_matches_training_validation_for_the_same_checkpoint(trained_run):
    report = evaluate(trained_run, split="val", save=False)
    best = torch.load(trained_run / "best.pt", map_location="cpu", weights_only=True)
    history = {r.epoch: r for r in read_history(trained_run)}
    record = history[best["epoch"]]
    assert report.top1 == pytest.approx(record.val_acc, abs=1e-9)
    assert report.loss == pytest.approx(record.val_loss, rel=1e-4)


def test_table_output_and_refusal_to_overwrite(run_copy):
    first = run_cli("eval", run_copy)
    assert first.returncode == 0, first.stderr
    assert "per class" in first.stderr and "confusion matrix" in first.stderr
    assert first.stdout == f"{run_copy / 'eval-test.json'}\n"
    again = run_cli("eval", run_copy)
    assert again.returncode == 2 and "--force" in one_error_line(again)
    assert run_cli("eval", run_copy, "--force").returncode == 0
    assert run_cli("eval", run_copy, "--no-save", "--split", "train").returncode == 0
    assert not (run_copy / "eval-train.json").exists()


def test_manifest_kept_elsewhere_and_moved_data(run_copy, small_split, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(small_split, moved)
    elsewhere = tmp_path / "manifests"
    elsewhere.mkdir()
    for name in ("manifest.csv", "manifest.json"):
        shutil.move(moved / name, elsewhere / name)
    proc = run_cli("eval", run_copy, "--data", moved, "--manifest", elsewhere / "manifest.csv", "--no-save", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["images"] == 40


@pytest.mark.gpu
def test_checkpoint_saved_on_gpu_evaluates_on_cpu(small_split, tmp_path):
    out = tmp_path / "gpu"
    trained = run_cli("train", "--data", small_split, "--arch", "18", "--epochs", "1", "--device", "cuda", "--out", out)
    assert trained.returncode == 0, trained.stderr
    proc = run_cli("eval", out, "--device", "cpu", "--no-save", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["device"] == "cpu"


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(p.with_name("best.pt").read_bytes()[:5000]), "truncated or not a torch checkpoint"),
        (lambda p: p.write_text("just text"), "truncated or not a torch checkpoint"),
        (lambda p: torch.save({"fc.weight": torch.zeros(2, 2)}, p), "not a resnet-cli checkpoint"),
    ],
)
def test_bad_checkpoints(run_copy, make, fragment):
    bad = run_copy / "bad.pt"
    make(bad)
    proc = run_cli("eval", bad)
    assert proc.returncode == 2
    assert fragment in one_error_line(proc)


def test_hostile_checkpoint_is_never_run(run_copy, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    hostile = run_copy / "hostile.pt"
    torch.save({"format": "resnet-cli checkpoint", "model": Payload()}, hostile)
    proc = run_cli("eval", hostile)
    assert proc.returncode == 2
    assert "not a safe checkpoint" in one_error_line(proc)
    assert not marker.exists()


def test_classes_that_do_not_match_the_data(run_copy, tmp_path):
    from resnet_cli.config import SplitConfig
    from resnet_cli.data.split import make_split
    from tests.images import make_folder

    other = make_folder(tmp_path / "other", {"cat": 6, "dog": 6})
    make_split(other, SplitConfig(val=0.2, test=0.2))
    proc = run_cli("eval", run_copy, "--data", other)
    assert proc.returncode == 2
    assert "do not match" in one_error_line(proc)


def test_empty_split(trained_run, tmp_path):
    from resnet_cli.config import SplitConfig
    from resnet_cli.data.sample import write_digits
    from resnet_cli.data.split import make_split

    data = tmp_path / "digits"
    write_digits(data, per_class=6)
    make_split(data, SplitConfig(val=0.2))  # no test part
    proc = run_cli("eval", trained_run, "--data", data, "--split", "test")
    assert proc.returncode == 2
    assert "test part" in one_error_line(proc) and "--test" in proc.stderr


def test_missing_target():
    proc = run_cli("eval", "no/such/run")
    assert proc.returncode == 2 and "does not exist" in one_error_line(proc)

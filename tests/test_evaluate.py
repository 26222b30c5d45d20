"""Evaluation reports: internal consistency, agreement with training's validation, hostile checkpoints."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from resnet_cli.engine.evaluate import evaluate
from resnet_cli.io.history import read_history
from resnet_cli.io.weights import LoadedWeights
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


def test_table_output_and_regeneration_of_its_own_reports(run_copy):
    first = run_cli("eval", run_copy)
    assert first.returncode == 0, first.stderr
    assert "per class" in first.stderr and "confusion matrix" in first.stderr
    assert "best.pt (epoch" in first.stderr  # which checkpoint was measured
    assert first.stdout == f"{run_copy / 'eval-test.json'}\n"
    # A report the tool wrote is regenerated without --force ...
    again = run_cli("eval", run_copy)
    assert again.returncode == 0, again.stderr
    assert json.loads((run_copy / "eval-test.json").read_text())["checkpoint"].startswith("best.pt (epoch ")
    # ... a user's file of that name is not.
    (run_copy / "eval-val.json").write_text("my notes\n")
    mine = run_cli("eval", run_copy, "--split", "val")
    assert mine.returncode == 2 and "--force" in one_error_line(mine)
    assert (run_copy / "eval-val.json").read_text() == "my notes\n"
    assert run_cli("eval", run_copy, "--split", "val", "--force").returncode == 0
    assert run_cli("eval", run_copy, "--no-save", "--split", "train").returncode == 0
    assert not (run_copy / "eval-train.json").exists()
    assert not (run_copy / ".resnet.lock").exists()


def test_a_run_folder_in_use_is_not_written(run_copy):
    from resnet_cli.fs import run_lock

    with run_lock(run_copy, "train"):
        busy = run_cli("eval", run_copy)
        free = run_cli("eval", run_copy, "--no-save", "--json")  # reads only: no lock needed
    assert busy.returncode == 2 and "in use by 'resnet train'" in one_error_line(busy)
    assert not (run_copy / "eval-test.json").exists()
    assert free.returncode == 0, free.stderr


def test_last_pt_used_for_want_of_best_pt_is_a_warning(run_copy):
    (run_copy / "best.pt").unlink()
    proc = run_cli("eval", run_copy, "--no-save", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    if "note" in LoadedWeights.__dataclass_fields__:  # LoadedWeights.note/describe() (io/weights.py)
        assert doc["checkpoint"].startswith("last.pt")
        assert any("best.pt" in w for w in doc["warnings"])
        assert any(line.startswith("warning: ") and "last.pt" in line for line in proc.stderr.splitlines())


def test_python_api_callbacks_and_typed_per_class_rows(trained_run):
    from resnet_cli.engine.callbacks import Callback
    from resnet_cli.engine.evaluate import ClassMetrics

    class Steps(Callback):
        def __init__(self) -> None:
            self.seen: list[tuple[int, int]] = []

        def on_validation_step(self, step: int, steps: int) -> None:
            self.seen.append((step, steps))

    new, old = Steps(), Steps()
    report = evaluate(trained_run, split="val", save=False, batch_size=16, callbacks=[new])
    assert new.seen and new.seen[-1][0] == new.seen[-1][1] == 3  # 40 images in batches of 16
    with pytest.warns(DeprecationWarning, match="callbacks="):
        evaluate(trained_run, split="val", save=False, batch_size=16, callback=old)
    assert old.seen == new.seen
    row = report.per_class[0]
    assert isinstance(row, ClassMetrics) and row.name == report.classes[0]
    with pytest.raises(AttributeError):
        row.recall = 1.0  # frozen
    assert report.to_dict()["per_class"][0] == {
        "class": row.name,
        "precision": row.precision,
        "recall": row.recall,
        "f1": row.f1,
        "support": row.support,
    }
    json.dumps(report.to_dict())


# -- eval never measures on the run's training images ---------------------------------------------------------


@pytest.fixture()
def resplit_run(small_copy, tmp_path):
    """The audit's sequence: split --val 0.2 (no test part), train, then split --test 0.1 --force."""
    from resnet_cli.config import SplitConfig, TrainConfig
    from resnet_cli.data.split import make_split
    from resnet_cli.engine.train import fit

    make_split(small_copy, SplitConfig(val=0.2, seed=1, force=True))
    run = tmp_path / "runs" / "r18"
    fit(TrainConfig(data=str(small_copy), arch="18", epochs=1, max_steps_per_epoch=2, batch_size=16, out=str(run)))
    trained_on = (small_copy / "manifest.csv").read_bytes()
    assert (run / "manifest.csv").read_bytes() == trained_on
    assert run_cli("split", small_copy, "--val", "0.2", "--test", "0.1", "--seed", "2", "--force").returncode == 0
    return small_copy, run


def test_eval_after_a_resplit_refuses_to_measure_training_images(resplit_run):
    data, run = resplit_run
    test_rows = [line for line in (data / "manifest.csv").read_text().splitlines() if ",test," in line]
    trained = {line.split(",")[0] for line in (run / "manifest.csv").read_text().splitlines() if ",train," in line}
    overlap = sum(line.split(",")[0] in trained for line in test_rows)
    assert overlap > 0
    proc = run_cli("eval", run)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert f"{overlap} of the {len(test_rows)} test images" in line and "training images" in line
    assert f"--manifest {run / 'manifest.csv'}" in line
    assert not (run / "eval-test.json").exists()
    # The way out it names: the split the run trained on, kept in the run folder.
    ok = run_cli("eval", run, "--manifest", run / "manifest.csv", "--split", "val", "--json")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["images"] == 40 and doc["warnings"] == []


def test_eval_after_a_resplit_matches_by_content_too(resplit_run, tmp_path):
    data, run = resplit_run
    moved = tmp_path / "renamed"
    shutil.copytree(data, moved)  # same images, another folder: paths cannot match, hashes do
    proc = run_cli("eval", run, "--data", moved, "--split", "val")
    assert proc.returncode == 2 and "training images" in one_error_line(proc)


def test_unseen_data_under_another_manifest_is_a_warning(trained_run, tmp_path):
    from resnet_cli.config import SplitConfig
    from resnet_cli.data.split import make_split
    from tests.images import make_folder

    fresh = make_folder(tmp_path / "fresh", {str(d): 5 for d in range(10)}, size=8)  # images the run never saw
    make_split(fresh, SplitConfig(val=0.2, test=0.2))
    proc = run_cli("eval", trained_run, "--data", fresh, "--no-save", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert len(doc["warnings"]) == 1 and "not the manifest" in doc["warnings"][0]
    assert proc.stderr.count("warning: ") == 1


def test_a_run_without_its_manifest_copy_cannot_be_checked(resplit_run):
    _, run = resplit_run
    (run / "manifest.csv").unlink()  # as a 0.1.0 run: no copy, and the recorded manifest has been replaced
    proc = run_cli("eval", run, "--no-save")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "cannot be checked" in line and "--manifest" in line


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
        (lambda p: p.write_bytes(p.with_name("best.pt").read_bytes()[:5000]), "truncated"),
        (lambda p: p.write_text("just text"), "not a checkpoint"),
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


# -- calibration ----------------------------------------------------------------------------------------------


def test_report_carries_calibration_that_agrees_with_the_predictions(run_copy):
    report = evaluate(run_copy, split="test", batch_size=16)
    assert report.nll == pytest.approx(report.loss, abs=1e-6)  # the same cross-entropy, float64 vs float32
    assert 0 <= report.ece <= 1 and 0 <= report.brier <= 2
    assert len(report.reliability) == 15 and sum(b["count"] for b in report.reliability) == report.images == 40
    assert report.temperature is None and report.calibrated is None
    # The ECE again, from the predictions file alone: 15 bins (lower, upper] of the top-1 confidence.
    with open(run_copy / "predictions-test.csv", newline="") as handle:
        rows = [(float(r["confidence"]), int(r["correct"])) for r in csv.DictReader(handle)]
    bins: dict[int, list[tuple[float, int]]] = {}
    for confidence, correct in rows:
        bins.setdefault(min(14, max(0, math.ceil(confidence * 15) - 1)), []).append((confidence, correct))
    ece = sum(abs(sum(c for _, c in b) / len(b) - sum(p for p, _ in b) / len(b)) * len(b) for b in bins.values()) / 40
    assert report.ece == pytest.approx(ece, abs=1e-5)
    saved = json.loads((run_copy / "eval-test.json").read_text())
    assert {k: saved[k] for k in ("nll", "ece", "brier", "reliability")} == {
        "nll": report.nll,
        "ece": report.ece,
        "brier": report.brier,
        "reliability": report.reliability,
    }
    assert saved["temperature"] is None and saved["calibrated"] is None


def test_temperature_is_fitted_on_val_and_reported_beside_the_raw_figures(run_copy):
    proc = run_cli("eval", run_copy, "--temperature")
    assert proc.returncode == 0, proc.stderr
    assert "calibration" in proc.stderr and "ECE" in proc.stderr and "calibrated (T=" in proc.stderr
    doc = json.loads((run_copy / "eval-test.json").read_text())
    t = doc["temperature"]
    assert isinstance(t, float) and t > 0
    assert f"calibrated (T={t:.2f})" in proc.stderr
    calibrated = doc["calibrated"]
    assert set(calibrated) == {"nll", "ece", "brier", "top1", "reliability"}
    assert calibrated["top1"] == pytest.approx(doc["top1"])  # dividing by T > 0 keeps every argmax
    assert sum(b["count"] for b in calibrated["reliability"]) == 40
    assert doc["warnings"] == []
    # Fitted on the val part: evaluating val itself finds the same T, with a warning that it is fitted there ...
    val = evaluate(run_copy, split="val", temperature=True, save=False)
    assert val.temperature == pytest.approx(t, rel=1e-9)
    assert any("same val images" in w for w in val.warnings)
    # ... where it is the NLL minimum over T, so never worse than T = 1.
    assert val.calibrated is not None and val.calibrated["nll"] <= val.nll + 1e-9


def test_temperature_needs_a_val_part(trained_run, small_copy):
    manifest, sidecar = small_copy / "manifest.csv", small_copy / "manifest.json"
    text = manifest.read_text().replace(",val,", ",train,")
    manifest.write_text(text)
    meta = json.loads(sidecar.read_text())
    meta["csv_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    sidecar.write_text(json.dumps(meta))
    proc = run_cli("eval", trained_run, "--data", small_copy, "--temperature", "--no-save")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "--temperature" in line and "val part" in line and str(manifest) in line

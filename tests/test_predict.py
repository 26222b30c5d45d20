"""Prediction on files and folders, with good and bad files mixed."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from resnet_cli.engine.predict import collect_inputs, not_regular, predict
from tests.conftest import ROOT, run_cli
from tests.images import truncate, write_png

HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript"))


def test_folder_mixing_good_and_bad_files(trained_run, small_split, tmp_path):
    folder = tmp_path / "images"
    for digit in ("3", "7"):
        (folder / digit).mkdir(parents=True)
        for src in sorted((small_split / digit).glob("*.png"))[:2]:
            shutil.copy(src, folder / digit / src.name)
    truncate(write_png(folder / "broken.png", size=64, seed=3))
    (folder / "notes.jpg").write_text("not an image")
    (folder / "readme.txt").write_text("ignored: not an image name")
    proc = run_cli("predict", trained_run, folder, "--json", "--top-k", "3")
    assert proc.returncode == 1  # some files failed
    doc = json.loads(proc.stdout)
    assert doc["images"] == 6 and doc["failed"] == 2
    by_name = {p["path"].rsplit("/", 1)[-1]: p for p in doc["predictions"]}
    assert "truncated" in by_name["broken.png"]["error"] and "not an image" in by_name["notes.jpg"]["error"]
    good = [p for p in doc["predictions"] if not p["error"]]
    assert all(len(p["top"]) == 3 for p in good)
    assert all(abs(sum(t["probability"] for t in p["top"])) <= 1.0 + 1e-6 for p in good)
    assert all(p["top"][0]["probability"] >= p["top"][1]["probability"] for p in good)
    assert "broken.png" in proc.stderr and "2 of 6 image(s) could not be read" in proc.stderr


def test_csv_table_and_agreement_with_eval(trained_run, small_split):
    train = {r.split(",")[0] for r in (small_split / "manifest.csv").read_text().splitlines() if ",train," in r}
    files = [small_split / p for p in sorted(train) if p.startswith("5/")][:3]
    proc = run_cli("predict", trained_run, *files, "--csv", "--top-k", "2")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [r["path"] for r in rows] == [str(f) for f in files]
    assert set(rows[0]) == {"path", "class_1", "probability_1", "class_2", "probability_2", "error"}
    table = run_cli("predict", trained_run, files[0])
    assert table.returncode == 0 and files[0].name in table.stdout
    # The same preprocessing as evaluation: identical top-1 for the same images.
    result = predict(trained_run, files, top_k=1)
    from resnet_cli.engine.evaluate import evaluate

    report = evaluate(trained_run, split="train", save=False)
    predicted = {p["path"]: p["predicted"] for p in report.predictions}
    compared = 0
    for p in result.predictions:
        rel = str(p.path).split(str(small_split) + "/", 1)[1]
        if rel in predicted:
            assert p.top[0][0] == predicted[rel]
            compared += 1
    assert compared >= 1


def test_bad_inputs(trained_run, tmp_path):
    missing = run_cli("predict", trained_run, tmp_path / "nope.png")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = run_cli("predict", trained_run, tmp_path / "empty")
    assert empty.returncode == 2 and "no images found" in empty.stderr
    topk = run_cli("predict", trained_run, tmp_path / "empty", "--top-k", "0")
    assert topk.returncode == 2 and "--top-k must be at least 1" in topk.stderr


def _digit_files(small_split, digit: str, n: int = 3) -> list:
    return sorted((small_split / digit).glob("*.png"))[:n]


@pytest.fixture()
def run_copy(trained_run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(trained_run, target)
    return target


@pytest.mark.skipif(not HAS_ONNX, reason="the optional extra is absent: pip install 'resnet-cli[onnx]'")
def test_predict_with_the_tools_own_onnx_export(run_copy, small_split):
    import onnx

    files = _digit_files(small_split, "4") + _digit_files(small_split, "9")
    onnx_path = run_cli("export", run_copy, "--format", "onnx").stdout.strip().splitlines()[-1]
    reference = json.loads(run_cli("predict", run_copy, *files, "--json", "--top-k", "3").stdout)
    proc = run_cli("predict", onnx_path, *files, "--json", "--top-k", "3")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert "from its metadata" in doc["weights_described"]
    for ours, theirs in zip(doc["predictions"], reference["predictions"], strict=True):
        assert [t["class"] for t in ours["top"]] == [t["class"] for t in theirs["top"]]
        assert [t["probability"] for t in ours["top"]] == pytest.approx(
            [t["probability"] for t in theirs["top"]], abs=1e-4
        )
    # An export without metadata (as 0.1.0 wrote) still works inside its run folder, from config.json.
    model = onnx.load(onnx_path)
    del model.metadata_props[:]
    onnx.save(model, onnx_path)
    old = run_cli("predict", onnx_path, *files, "--json", "--top-k", "3")
    assert old.returncode == 0, old.stderr
    assert "config.json" in json.loads(old.stdout)["weights_described"]
    assert [p["top"][0]["class"] for p in json.loads(old.stdout)["predictions"]] == [
        p["top"][0]["class"] for p in reference["predictions"]
    ]
    # Elsewhere, without metadata or a run beside it, it says what to do.
    lone = run_copy.parent / "lone.onnx"
    shutil.copy(onnx_path, lone)
    refused = run_cli("predict", lone, *files)
    assert refused.returncode == 2 and "export it again" in refused.stderr
    # eval does not take ONNX, and says so by name.
    ev = run_cli("eval", onnx_path, "--no-save")
    assert ev.returncode == 2 and "is an ONNX model" in ev.stderr and "'resnet predict' takes it" in ev.stderr


@pytest.mark.skipif(not HAS_ONNX, reason="the optional extra is absent: pip install 'resnet-cli[onnx]'")
def test_onnx_predict_without_onnxruntime_says_how_to_install(run_copy, small_split, tmp_path):
    onnx_path = run_cli("export", run_copy, "--format", "onnx").stdout.strip().splitlines()[-1]
    for name in ("onnx", "onnxruntime"):
        (tmp_path / "absent" / name).mkdir(parents=True)
        (tmp_path / "absent" / name / "__init__.py").write_text("raise ImportError('not installed')\n")
    proc = run_cli(
        "predict",
        onnx_path,
        _digit_files(small_split, "1")[0],
        env={"PYTHONPATH": f"{tmp_path / 'absent'}:{ROOT}"},
        real_process=True,
    )
    assert proc.returncode == 2 and "pip install 'resnet-cli[onnx]'" in proc.stderr


def test_special_files_are_failed_inputs_not_hangs(trained_run, small_split, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    good = shutil.copy(_digit_files(small_split, "2")[0], folder / "good.png")
    os.mkfifo(folder / "fifo.png")
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "dangling.png").symlink_to(folder / "gone.png")
    for args in ([folder], [good, folder / "fifo.png", folder / "zero.png", folder / "dangling.png"]):
        proc = run_cli("predict", trained_run, *args, "--json", real_process=True, timeout=240)
        assert proc.returncode == 1, proc.stderr
        doc = json.loads(proc.stdout)
        errors = {Path(p["path"]).name: p["error"] for p in doc["predictions"]}
        assert errors["good.png"] is None
        assert "a FIFO" in errors["fifo.png"] and "a character device" in errors["zero.png"]
        assert "does not exist" in errors["dangling.png"]
        assert "fifo.png" in proc.stderr and "zero.png" in proc.stderr


def test_collect_inputs_never_opens_special_files(tmp_path):
    os.mkfifo(tmp_path / "x.png")
    assert collect_inputs([tmp_path]) == [tmp_path / "x.png"]  # kept, to be reported; opening would block
    assert not_regular(tmp_path / "x.png").startswith("not a regular file (a FIFO)")


def test_warns_when_the_run_has_no_best_pt_yet(run_copy, small_split):
    (run_copy / "best.pt").unlink()
    proc = run_cli("predict", run_copy, _digit_files(small_split, "0")[0], "--json")
    assert proc.returncode == 0, proc.stderr
    assert "warning:" in proc.stderr and "no best.pt yet" in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["weights_described"].startswith("last.pt (epoch 3") and "no best.pt yet" in doc["note"]


def test_help_shows_one_example_per_line():
    proc = run_cli("predict", "--help")
    assert proc.returncode == 0 and " | " not in proc.stdout
    lines = [line.strip() for line in proc.stdout.splitlines()]
    assert "resnet predict runs/r34 photo.jpg" in lines
    assert "resnet predict runs/r34/model.safetensors images/ --csv" in lines

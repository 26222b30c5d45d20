"""Prediction on files and folders, with good and bad files mixed."""

from __future__ import annotations

import csv
import io
import json
import shutil

from resnet_cli.engine.predict import predict
from tests.conftest import run_cli
from tests.images import truncate, write_png


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

"""The example scripts run end to end (cut to a tiny size: one epoch of a few steps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"


def run_example(name: str, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent  # the resnet and torchrun entry points of this environment
    full_env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "WORK": str(tmp_path / "work"),
        "EPOCHS": "1",
        "MAX_STEPS": "3",
        **env,
    }
    return subprocess.run(
        ["bash", str(EXAMPLES / name), *args], cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_quickstart(tmp_path):
    proc = run_example("quickstart.sh", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tmp_path / "work"
    run = work / "runs" / "r34"
    for name in ("best.pt", "eval-test.json", "curves.png", "confusion-test.png", "model.safetensors"):
        assert (run / name).is_file(), name
    assert "test accuracy" in proc.stdout and f"exported weights: {run / 'model.safetensors'}" in proc.stdout
    assert json.loads((run / "eval-test.json").read_text())["images"] == 269


@pytest.mark.slow
def test_compare_r34_r50(tmp_path):
    proc = run_example("compare_r34_r50.sh", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "work" / "r34_vs_r50.png").is_file()
    assert "runs/r34" in proc.stdout and "runs/r50" in proc.stdout and "test accuracy" in proc.stdout


@pytest.mark.slow
def test_multi_gpu(tmp_path):
    proc = run_example("multi_gpu.sh", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((tmp_path / "work" / "runs" / "ddp" / "config.json").read_text())
    assert config["placement"]["world_size"] >= 2 or config["placement"]["device"].startswith("cuda")


@pytest.mark.slow
def test_finetune_from_torchvision(tmp_path):
    proc = run_example("finetune_from_torchvision.sh", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "classifier replaced: 1000 -> 10 classes" in proc.stderr
    config = json.loads((tmp_path / "work" / "runs" / "r34-ft" / "config.json").read_text())
    assert config["model"] == {"arch": "resnet34", "num_classes": 10, "in_channels": 3, "small_input": False,
                               "image_size": None}  # fmt: skip


@pytest.mark.slow
def test_resnet_vs_vit(tmp_path):
    proc = run_example("resnet_vs_vit.sh", tmp_path, SEEDS="1", FRACTIONS="1", MAX_STEPS="2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = tmp_path / "work" / "study"
    report = json.loads((study / "report.json").read_text())
    assert [r["arch"] for r in report["runs"]] == ["resnet34", "vit_s_4"] and not report["missing"]
    assert (study / "study-accuracy.png").is_file() and "report:" in proc.stdout

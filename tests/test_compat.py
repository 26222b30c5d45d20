"""Runs written by 0.1.0 still resume, evaluate and refuse what they must: the 0.1.0 code itself (from this
repository's history) writes the run, and the current code continues it."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, run_cli

#: The last commit of release 0.1.0.
RELEASE_0_1_0 = "57e0c5cef0e7c254372cd4205f21de041fdca8a4"


@pytest.fixture(scope="module")
def old_code(tmp_path_factory) -> Path:
    """The 0.1.0 package, extracted from git history."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", RELEASE_0_1_0, "resnet_cli"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        pytest.skip(f"0.1.0 is not in this clone's history: {archive.stderr.decode().strip()}")
    target = tmp_path_factory.mktemp("v0_1_0")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target


@pytest.fixture(scope="module")
def old_run(old_code, small_split, tmp_path_factory) -> Path:
    """A run stopped mid-way by 0.1.0: one finished epoch, then a mid-epoch checkpoint of epoch 2."""
    out = tmp_path_factory.mktemp("old") / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "resnet_cli", "train", "--data", str(small_split), "--arch", "18",
         "--batch-size", "16", "--workers", "0", "--epochs", "1", "--out", str(out)],
        env={**os.environ, "PYTHONPATH": str(old_code)}, capture_output=True, text=True, timeout=600,
        cwd=old_code,  # `python -m` puts the working folder first on the path
    )  # fmt: skip
    assert "optimizer" in torch.load(out / "best.pt", weights_only=True)  # 0.1.0's full best.pt: the old code ran
    assert proc.returncode == 0, proc.stderr
    return out


def test_a_0_1_0_run_resumes_and_evaluates(old_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(old_run, run)
    old_last = torch.load(run / "last.pt", weights_only=True)
    evaluated = run_cli("eval", run, "--quiet")
    assert evaluated.returncode == 0, evaluated.stderr
    resumed = run_cli("train", "--resume", "--out", run, "--epochs", "2", "--max-steps", "2")
    assert resumed.returncode == 0, resumed.stderr
    new_last = torch.load(run / "last.pt", weights_only=True)
    assert new_last["epoch"] == 2 and old_last["epoch"] == 1
    assert (run / "manifest.csv").exists()  # written on resume, for later evals


def test_force_refuses_a_0_1_0_run_and_keeps_it(old_run, small_split, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(old_run, run)
    before = sorted(p.name for p in run.iterdir())
    proc = run_cli("train", "--data", small_split, "--arch", "18", "--out", run, "--force")
    assert proc.returncode == 2
    assert "0.1.0" in proc.stderr
    assert sorted(p.name for p in run.iterdir()) == before

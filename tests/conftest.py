"""Shared fixtures. Image fixtures are real files on disk, written by the tests or by ``resnet sample-data``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

# Two CPU cores here: keep torch from oversubscribing when pytest and subprocesses run side by side.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = Path(__file__).resolve().parents[1]
# --precision auto caches its measurements per machine: keep the tests' cache out of the user's (one per session,
# shared by the subprocesses the tests start).
os.environ.setdefault("RESNET_CACHE_DIR", str(Path(tempfile.gettempdir()) / f"resnet-test-cache-{os.getpid()}"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def run_cli(*args: str, env: dict | None = None, real_process: bool = False, timeout: float = 300, **kwargs):
    """Run the ``resnet`` command and return ``returncode``, ``stdout`` and ``stderr``.

    In process through Typer's CliRunner by default (importing torch once, not per call); in a real
    subprocess of ``python -m resnet_cli`` when the test needs one (signals, resource limits, another
    PYTHONPATH, a working directory) or asks with ``real_process=True``.
    """
    args = tuple(map(str, args))
    if real_process or kwargs:
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        full_env.pop("RESNET_DEBUG", None)
        return subprocess.run(
            [sys.executable, "-m", "resnet_cli", *args],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )
    from typer.testing import CliRunner

    from resnet_cli.cli.app import app

    result = CliRunner().invoke(app, list(args), env={"RESNET_DEBUG": None, **(env or {})})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a crash of the CLI itself: show it, do not hide it behind an exit code
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


@pytest.fixture(scope="session")
def digits_split(tmp_path_factory) -> Path:
    """All 1,797 digits, split 70/15/15 with seed 0. Read-only: copy it before changing anything."""
    from resnet_cli.config import SplitConfig
    from resnet_cli.data.sample import write_digits
    from resnet_cli.data.split import make_split

    root = tmp_path_factory.mktemp("digits") / "data"
    write_digits(root)
    make_split(root, SplitConfig(val=0.15, test=0.15, seed=0))
    return root


@pytest.fixture(scope="session")
def small_split(tmp_path_factory) -> Path:
    """20 digits per class (200 images), split 60/20/20. Read-only."""
    from resnet_cli.config import SplitConfig
    from resnet_cli.data.sample import write_digits
    from resnet_cli.data.split import make_split

    root = tmp_path_factory.mktemp("small") / "data"
    write_digits(root, per_class=20)
    make_split(root, SplitConfig(val=0.2, test=0.2, seed=0))
    return root


@pytest.fixture()
def small_copy(small_split, tmp_path) -> Path:
    """A private copy of ``small_split`` a test may modify."""
    target = tmp_path / "data"
    shutil.copytree(small_split, target)
    return target


@pytest.fixture(scope="session")
def trained_run(small_split, tmp_path_factory) -> Path:
    """A tiny finished run (resnet18, 3 epochs) on ``small_split``. Read-only."""
    from resnet_cli.config import TrainConfig
    from resnet_cli.engine.train import fit

    out = tmp_path_factory.mktemp("runs") / "r18"
    fit(TrainConfig(data=str(small_split), arch="18", epochs=3, batch_size=16, out=str(out), workers=0))
    return out

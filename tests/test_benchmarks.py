"""The benchmark scripts run (``--quick``, real subprocesses) and print their verdict lines; no timed assertions."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def run_bench(name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    ("name", "verdict"),
    [
        ("train", r"fit/bare \d+\.\d{3} \(target >= 0\.95\): (met|NOT met)"),
        ("data", r"loader ours/ImageFolder \(lowest of \d+ rows\) \d+\.\d{3} \(target >= 0\.95\)"),
        ("evaluate", r"evaluate/bare \(lowest of \d+\) \d+\.\d{3} \(target >= 0\.95\)"),
        ("study", r"study/by-hand \d+\.\d{3} \(target >= 0\.98\): (met|NOT met)"),
        ("precision", r"precision auto/fastest \(lowest of 1 archs\) \d+\.\d{3} \(target >= 0\.95\): (met|NOT met)"),
        ("vs_timm", r"wall timm/ours: not measured \(quick run without --timm-train: our side only\)"),
    ],
)
def test_each_benchmark_runs_quick_and_prints_its_verdict(name: str, verdict: str) -> None:
    result = run_bench(name)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(verdict, result.stdout), result.stdout
    if name == "train":
        assert re.search(r"host syncs per step \(reads in the project's code\): \d", result.stdout)
    if name == "data":
        assert "make_split of 200 16 px PNGs" in result.stdout
        assert re.search(r"--cache-images, epoch-2 loader img/s cache/decode: digits, 8 px PNG \(workers 0\) "
                         r"\d+\.\d\dx; synthetic, 28 px PNG \(workers 0\) \d+\.\d\dx", result.stdout)  # fmt: skip
    if name == "vs_timm":  # our whole run, timed from launch to exit, and the timm command it would run beside it
        assert re.search(r"\| ours \| \d+\.\d \|", result.stdout)
        assert "train.py --data-dir" in result.stdout and "--model resnet18" in result.stdout


def test_models_benchmark_with_json_prints_one_document_with_its_verdict() -> None:
    result = run_bench("models", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(result.stdout)  # stdout holds the JSON document and nothing else
    assert [v["name"] for v in document["verdicts"]] == ["models ours/torchvision (lowest of 4 rows)"]
    assert {row["mode"] for row in document["models"]} == {"fwd", "fwd+bwd"}
    assert re.search(r"models ours/torchvision .* \d+\.\d{3} \(target >= 0\.98\)", result.stderr)


def test_host_sync_counter_sees_each_kind_of_read_by_its_line_and_restores_torch() -> None:
    spec = importlib.util.spec_from_file_location("bench_train", BENCH / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    before = {name: torch.Tensor.__dict__.get(name) for name in module.READS}
    t = torch.tensor([1.5, 2.0])
    reads = module.TensorReads(epoch=2, device=torch.device("cpu"))
    with reads:
        reads.on_epoch_start(1, 2, 5)
        float(t[0])  # epoch 1: not counted
        reads.on_epoch_start(2, 2, 5)
        line = sys._getframe().f_lineno
        float(t[0]), int(t[1]), t[0].item(), t.tolist(), bool(t[1]), t.cpu()
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1).step()  # a read inside torch, if any
        reads.on_validation_start(2, 1)
        float(t[0])  # validation: not counted
    assert reads.steps == 5
    here = f"tests/test_benchmarks.py:{line + 1}"
    assert reads.sites[here] == 6
    assert all(s == here or s.startswith("inside ") for s in reads.sites), reads.sites
    assert {name: torch.Tensor.__dict__.get(name) for name in module.READS} == before
    assert float(t[0]) == 1.5

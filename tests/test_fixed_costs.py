"""What the cuts to ``resnet train``'s fixed costs must keep: checkpoints written straight to disk still round-trip
and stay atomic, the cheaper finiteness check still names every bad tensor, and best.pt is last.pt's summary."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resnet_cli.config import TrainConfig
from resnet_cli.data.split import default_manifest_path, read_manifest
from resnet_cli.engine.state import SUMMARY_KEYS, summary_of
from resnet_cli.engine.train import fit
from resnet_cli.errors import RunFailedError
from resnet_cli.io.checkpoint import FORMAT, load_checkpoint, non_finite_tensors, save_checkpoint
from resnet_cli.models import build_model

ROOT = Path(__file__).resolve().parents[1]


def payload(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = build_model("resnet18", 10, 3, False)
    return {"model": model.state_dict(), "classes": [str(i) for i in range(10)], "epoch": 3, "note": "plain values"}


def temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_checkpoint_written_straight_to_its_file_round_trips_with_weights_only(tmp_path: Path) -> None:
    saved = payload()
    save_checkpoint(tmp_path / "last.pt", saved)
    loaded = load_checkpoint(tmp_path / "last.pt")  # torch.load(weights_only=True) inside
    assert loaded["format"] == FORMAT
    assert loaded["classes"] == saved["classes"] and loaded["epoch"] == 3 and loaded["note"] == "plain values"
    assert loaded["model"].keys() == saved["model"].keys()
    assert all(torch.equal(loaded["model"][k], v) for k, v in saved["model"].items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_checkpoint_for_several_paths_writes_the_same_bytes_to_each(tmp_path: Path) -> None:
    save_checkpoint([tmp_path / "a.pt", tmp_path / "b.pt"], payload())
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert load_checkpoint(tmp_path / "b.pt")["epoch"] == 3


def test_a_serialisation_that_fails_midway_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    save_checkpoint(target, payload())
    before = target.read_bytes()
    broken = {**payload(1), "zz_unpicklable": lambda: None}  # after the tensors: the file is half written
    with pytest.raises(Exception, match="pickle"):
        save_checkpoint(target, broken)
    assert target.read_bytes() == before
    assert temporaries(tmp_path) == []


def test_a_full_disk_midway_is_a_run_failure_and_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    # A real write error: the file-size limit (RLIMIT_FSIZE) makes the write fail with EFBIG part-way through.
    script = f"""
import resource, signal, sys
import torch
from resnet_cli.errors import RunFailedError
from resnet_cli.io.checkpoint import save_checkpoint
target = {str(tmp_path / "last.pt")!r}
save_checkpoint(target, {{"model": {{"w": torch.ones(1000)}}}})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
try:
    save_checkpoint(target, {{"model": {{"w": torch.ones(1 << 20)}}}})
except RunFailedError as exc:
    print("refused:", exc)
    sys.exit(0)
sys.exit("written past the limit")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:] + result.stdout
    assert "refused:" in result.stdout and "last.pt" in result.stdout
    kept = load_checkpoint(tmp_path / "last.pt")["model"]["w"]
    assert torch.equal(kept, torch.ones(1000))
    assert temporaries(tmp_path) == []


def test_every_non_finite_tensor_is_named_and_huge_finite_values_are_not() -> None:
    state = {
        "nan": torch.tensor([1.0, float("nan"), 2.0]),
        "inf": torch.tensor([float("inf"), 1.0]),
        "both": torch.tensor([float("inf"), float("-inf")]),  # sums to NaN
        "half": torch.tensor([float("inf"), 1.0], dtype=torch.float16),
        "double": torch.tensor([float("-inf")], dtype=torch.float64),
        "huge": torch.full((8,), 3e38),  # finite, though the float32 sum overflows
        "half_large": torch.full((4,), 60000.0, dtype=torch.float16),  # finite; the float16 sum would overflow
        "fine": torch.randn(100),
        "empty": torch.empty(0),
        "steps": torch.tensor(7),  # integer buffers are never checked
    }
    assert non_finite_tensors(state) == ["nan", "inf", "both", "half", "double"]
    assert (
        non_finite_tensors({k: v for k, v in state.items() if k not in ("nan", "inf", "both", "half", "double")}) == []
    )


def test_weights_with_nan_are_refused_and_the_previous_checkpoint_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "best.pt"
    save_checkpoint(target, payload())
    before = target.read_bytes()
    bad = payload(1)
    bad["model"]["layer3.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(RunFailedError, match=r"layer3\.0\.conv1\.weight"):
        save_checkpoint(target, bad)
    assert target.read_bytes() == before


def test_best_pt_holds_exactly_the_summary_of_last_pt(small_split: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    fit(TrainConfig(data=str(small_split), arch="18", epochs=1, max_steps_per_epoch=2, batch_size=16, out=str(out),
                    workers=0, precision="fp32", channels_last=False))  # fmt: skip
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")  # epoch 1 is always the best
    assert set(best) == {"format", "version", *SUMMARY_KEYS}
    assert "optimizer" in last and "optimizer" not in best
    summary = summary_of(last)
    assert summary.keys() == set(SUMMARY_KEYS)
    for key in SUMMARY_KEYS:
        if key == "model":
            assert all(torch.equal(summary["model"][k], v) for k, v in best["model"].items())
        else:
            assert summary[key] == best[key], key


def test_the_benchmark_gives_timm_the_manifests_train_and_val_images(small_split: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("vs_timm", ROOT / "benchmarks" / "vs_timm.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    manifest = read_manifest(default_manifest_path(small_split), root=small_split)
    module.timm_layout(manifest, tmp_path / "timm")
    for part, folder in (("train", "train"), ("val", "validation")):
        rows = manifest.part(part)
        files = sorted((tmp_path / "timm" / folder).glob("*/*"))
        assert len(files) == len(rows)
        for row in rows:
            copy = tmp_path / "timm" / folder / row.label / Path(row.path).name
            assert copy.read_bytes() == (small_split / row.path).read_bytes()
    assert not (tmp_path / "timm" / "test").exists()

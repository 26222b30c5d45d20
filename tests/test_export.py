"""Exports: safetensors round trip and torchvision interchange, ONNX/TorchScript parity, corrupt files."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import load_file

from resnet_cli.engine.evaluate import evaluate
from resnet_cli.engine.export import EXPORT_FORMATS, TORCHSCRIPT_METADATA, export
from resnet_cli.fs import owned_files, run_lock
from resnet_cli.io.weights import load_weights
from tests.conftest import run_cli

HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript"))


@pytest.fixture()
def run_copy(trained_run, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(trained_run, target)
    return target


def test_safetensors_round_trip_is_exact(run_copy):
    proc = run_cli("export", run_copy)
    assert proc.returncode == 0, proc.stderr
    path = run_copy / "model.safetensors"
    assert proc.stdout.strip().splitlines()[-1] == str(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"sha256 {digest}" in proc.stderr
    checkpoint = torch.load(run_copy / "best.pt", map_location="cpu", weights_only=True)["model"]
    exported = load_file(path)
    assert exported.keys() == checkpoint.keys()  # BatchNorm buffers included
    assert all(torch.equal(exported[k], checkpoint[k]) for k in checkpoint)
    meta = load_weights(path).metadata
    assert meta["arch"] == "resnet18" and meta["depth"] == "18" and meta["num_classes"] == "10"
    assert json.loads(meta["classes"]) == [str(d) for d in range(10)]
    assert meta["small_input"] == "true" and meta["in_channels"] == "1" and meta["image_size"] == "8"
    assert json.loads(meta["mean"]) and json.loads(meta["std"])
    assert meta["source_sha256"] == hashlib.sha256((run_copy / "best.pt").read_bytes()).hexdigest()


def test_safetensors_loads_strictly_into_torchvision(run_copy):
    path = export(run_copy).path
    tv = torchvision.models.resnet18(num_classes=10)
    # The same stem change the run used: greyscale input, small-input stem.
    tv.conv1 = torch.nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    tv.maxpool = torch.nn.Identity()
    tv.load_state_dict(load_file(path), strict=True)
    ours = load_weights(run_copy).build()
    tv.eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(tv(x), ours(x), atol=1e-5, rtol=0)


def test_safetensors_and_checkpoint_give_identical_eval(run_copy):
    path = export(run_copy).path
    a = evaluate(run_copy / "best.pt", split="test", save=False)
    b = evaluate(path, split="test", save=False, manifest=Path(a.manifest))
    assert a.confusion_matrix == b.confusion_matrix
    assert a.loss == pytest.approx(b.loss, abs=1e-6)
    assert [p["confidence"] for p in a.predictions] == pytest.approx([p["confidence"] for p in b.predictions], abs=1e-6)


def test_exports_of_the_same_weights_are_byte_identical(run_copy, tmp_path):
    first = export(run_copy, out=tmp_path / "a.safetensors")
    second = export(run_copy, out=tmp_path / "b.safetensors")
    assert first.sha256 == second.sha256
    assert first.path.read_bytes() == second.path.read_bytes()
    checkpoint = torch.load(run_copy / "best.pt", map_location="cpu", weights_only=True)["model"]
    exported = load_file(first.path)  # the sorted header still reads back exactly
    assert exported.keys() == checkpoint.keys() and all(torch.equal(exported[k], checkpoint[k]) for k in checkpoint)
    assert load_weights(first.path).describe() == "a.safetensors (exported from best.pt)"


def test_bf16_export_halves_the_file(run_copy, tmp_path):
    full = export(run_copy, out=tmp_path / "fp32.safetensors")
    half = export(run_copy, out=tmp_path / "bf16.safetensors", dtype="bf16")
    assert half.size_bytes < 0.6 * full.size_bytes
    tensors = load_file(half.path)
    assert tensors["fc.weight"].dtype == torch.bfloat16
    assert tensors["bn1.num_batches_tracked"].dtype == torch.int64


def test_regenerates_its_own_export_but_refuses_user_files_and_nonfinite_weights(run_copy, tmp_path):
    assert run_cli("export", run_copy).returncode == 0
    assert "model.safetensors" in owned_files(run_copy)
    again = run_cli("export", run_copy)  # the tool's own file in a run folder: regenerated without --force
    assert again.returncode == 0, again.stderr
    # A user's file, in the run folder or elsewhere, needs --force.
    for user_file in (run_copy / "mine.safetensors", tmp_path / "elsewhere.safetensors"):
        user_file.write_bytes(b"the user's own file")
        refused = run_cli("export", run_copy, "--out", user_file)
        assert refused.returncode == 2 and "--force" in refused.stderr
        assert user_file.read_bytes() == b"the user's own file"
        assert run_cli("export", run_copy, "--out", user_file, "--force").returncode == 0
    assert "mine.safetensors" in owned_files(run_copy) and not (tmp_path / ".resnet-files.json").exists()
    # A checkpoint whose weights went NaN is refused.
    ckpt = torch.load(run_copy / "best.pt", map_location="cpu", weights_only=True)
    ckpt["model"]["fc.bias"][0] = float("nan")
    torch.save(ckpt, tmp_path / "nan.pt")
    proc = run_cli("export", tmp_path / "nan.pt", "--out", tmp_path / "nan.safetensors")
    assert proc.returncode == 2 and "NaN or infinite" in proc.stderr and "fc.bias" in proc.stderr
    assert not (tmp_path / "nan.safetensors").exists()


def test_export_into_a_run_folder_waits_for_no_one(run_copy):
    with run_lock(run_copy, "train"):
        proc = run_cli("export", run_copy)
    assert proc.returncode == 2 and "in use by 'resnet train'" in proc.stderr
    assert not (run_copy / "model.safetensors").exists()


def test_eval_of_an_export_in_a_run_folder_finds_the_runs_data(run_copy):
    path = export(run_copy).path
    proc = run_cli("eval", path, "--no-save", "--json")  # no --data: the run's config.json says where
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["images"] > 0


def test_parity_images_come_from_the_manifest_the_weights_record(run_copy, small_split, tmp_path):
    from resnet_cli.engine.export import sample_inputs

    inside = load_weights(export(run_copy).path)  # beside the run's config.json: the run's manifest
    batch, source = sample_inputs(inside, None)
    assert batch.shape[1:] == (1, 8, 8) and source.startswith(f"{batch.shape[0]} images from ")
    outside = tmp_path / "alone" / "model.safetensors"  # nothing records where its data is
    outside.parent.mkdir()
    shutil.copy(run_copy / "model.safetensors", outside)
    assert sample_inputs(load_weights(outside), None)[1] == "8 random inputs (the run's images were not found)"
    assert sample_inputs(load_weights(outside), small_split)[1].endswith(str(small_split / "manifest.csv"))


def test_manifest_lookup_takes_plain_locations(small_split, tmp_path):
    from resnet_cli.data.locate import RecordedManifest, locate_manifest
    from resnet_cli.errors import DatasetError

    real = RecordedManifest(small_split / "manifest.csv")
    gone = [RecordedManifest(tmp_path / "a.csv"), RecordedManifest(tmp_path / "b.csv")]
    assert locate_manifest(None, None, [gone[0], real], "w.pt").path == real.path  # the first that exists
    assert locate_manifest(small_split, None, gone, "w.pt").root == small_split  # --data wins over records
    with pytest.raises(DatasetError, match=r"trained with \(.*b\.csv\) is gone: pass data or manifest$"):
        locate_manifest(None, None, gone, "w.pt")
    with pytest.raises(DatasetError, match=r"^w\.pt does not say where its data is: pass data DIR"):
        locate_manifest(None, None, [], "w.pt")


@pytest.fixture()
def run_without_best(trained_run, tmp_path) -> Path:
    """A run stopped 3 steps into its first epoch: only last.pt, holding epoch 0 and 3 batches done."""
    from resnet_cli.io.checkpoint import save_checkpoint

    target = tmp_path / "stopped"
    shutil.copytree(trained_run, target)
    (target / "best.pt").unlink()
    state = torch.load(target / "last.pt", map_location="cpu", weights_only=True)
    state["epoch"] = 0
    state["loader"]["batches_done"] = 3
    state.pop("format"), state.pop("version")
    save_checkpoint(target / "last.pt", state)
    return target


def test_describes_the_weights_and_warns_when_best_pt_is_missing(trained_run, run_without_best):
    assert load_weights(trained_run).describe() == "best.pt (epoch 3)"
    assert load_weights(trained_run).note is None
    weights = load_weights(run_without_best)
    assert weights.source.name == "last.pt"
    assert weights.describe() == "last.pt (epoch 0, step 3: no best.pt yet)"
    assert "no best.pt yet" in weights.note
    proc = run_cli("export", run_without_best, "--json")
    assert proc.returncode == 0, proc.stderr
    assert "warning:" in proc.stderr and "no best.pt yet" in proc.stderr
    assert json.loads(proc.stdout)["weights"] == "last.pt (epoch 0, step 3: no best.pt yet)"
    assert (
        load_weights(run_without_best / "model.safetensors").describe() == "model.safetensors (exported from last.pt)"
    )


def test_best_pt_with_weights_and_metadata_only_is_enough(run_copy):
    from resnet_cli.io.checkpoint import save_checkpoint

    state = torch.load(run_copy / "best.pt", map_location="cpu", weights_only=True)
    keep = ("model", "model_config", "classes", "preprocess", "epoch")
    save_checkpoint(run_copy / "best.pt", {k: state[k] for k in keep})
    weights = load_weights(run_copy)
    assert weights.describe() == f"best.pt (epoch {state['epoch']})"
    assert export(run_copy).path.is_file()


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda data: data[: len(data) // 2], "not a valid safetensors file"),
        (lambda data: b"\xff" * 8 + data[8:], "not a valid safetensors file"),
        (lambda data: b"", "is empty (0 bytes)"),
    ],
)
def test_corrupt_safetensors(run_copy, tmp_path, damage, fragment):
    good = export(run_copy).path
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(damage(good.read_bytes()))
    for command in (
        ["eval", bad, "--no-save"],
        ["predict", bad, run_copy],
        ["export", bad, "--out", tmp_path / "x.safetensors"],
    ):
        proc = run_cli(*command)
        assert proc.returncode == 2, (command, proc.stderr)
        assert fragment in proc.stderr and "Traceback" not in proc.stderr


def test_plain_state_dict_safetensors_is_explained(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file(torchvision.models.resnet18(num_classes=3).state_dict(), path)
    proc = run_cli("eval", path)
    assert proc.returncode == 2 and "no resnet-cli metadata" in proc.stderr and "--init" in proc.stderr


def test_torchscript_parity(run_copy):
    proc = run_cli("export", run_copy, "--format", "torchscript", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["parity"]["max_abs_diff"] < 1e-4 and doc["parity"]["top1_agreement"] == 1.0
    assert "images from" in doc["parity"]["inputs"]  # real images, not random tensors
    extra = {TORCHSCRIPT_METADATA: ""}
    module = torch.jit.load(doc["path"], _extra_files=extra)
    assert module(torch.randn(3, 1, 8, 8)).shape == (3, 10)  # dynamic batch
    assert json.loads(extra[TORCHSCRIPT_METADATA])["classes"] == json.dumps([str(d) for d in range(10)])


@pytest.mark.skipif(not HAS_ONNX, reason="the optional extra is absent: pip install 'resnet-cli[onnx]'")
def test_onnx_parity_and_dynamic_batch(run_copy):
    import onnxruntime as ort

    proc = run_cli("export", run_copy, "--format", "onnx", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["parity"]["max_abs_diff"] < 1e-3 and doc["parity"]["top1_agreement"] == 1.0
    session = ort.InferenceSession(doc["path"], providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        out = session.run(None, {"input": torch.randn(batch, 1, 8, 8).numpy()})[0]
        assert out.shape == (batch, 10)
    meta = session.get_modelmeta().custom_metadata_map  # what predict needs: classes and preprocessing
    assert json.loads(meta["classes"]) == [str(d) for d in range(10)] and meta["image_size"] == "8"


def test_onnx_without_the_extra_says_how_to_install(run_copy, tmp_path):
    # Shadow the extra's packages with ones that fail to import, as on a machine without it.
    for name in ("onnx", "onnxruntime", "onnxscript"):
        (tmp_path / "absent" / name).mkdir(parents=True)
        (tmp_path / "absent" / name / "__init__.py").write_text("raise ImportError('not installed')\n")
    from tests.conftest import ROOT

    proc = run_cli(
        "export", run_copy, "--format", "onnx", env={"PYTHONPATH": f"{tmp_path / 'absent'}:{ROOT}"}, real_process=True
    )
    assert proc.returncode == 2 and "pip install 'resnet-cli[onnx]'" in proc.stderr
    assert not (run_copy / "model.onnx").exists()


def test_bad_export_options(run_copy):
    for args, fragment in (
        (["--format", "tflite"], "unknown format"),
        (["--dtype", "int8"], "unknown dtype"),
        (["--format", "torchscript", "--dtype", "bf16"], "safetensors only"),
    ):
        proc = run_cli("export", run_copy, *args)
        assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr


def test_format_completion_offers_every_export_format():
    from resnet_cli.cli.export import DTYPE_CHOICES, FORMAT_CHOICES
    from resnet_cli.engine.export import DTYPES
    from tests.conftest import ROOT

    assert FORMAT_CHOICES == EXPORT_FORMATS and tuple(DTYPES) == DTYPE_CHOICES

    proc = subprocess.run(
        [sys.executable, "-m", "resnet_cli"],
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "_RESNET_COMPLETE": "complete_bash",
            "COMP_WORDS": "resnet export runs/r18 --format o",
            "COMP_CWORD": "4",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.split() == ["onnx"], proc.stderr


def test_export_help_lists_one_example_per_line():
    proc = run_cli("export", "--help")
    assert proc.returncode == 0 and " | " not in proc.stdout
    lines = [line.strip() for line in proc.stdout.splitlines()]
    assert "resnet export runs/r34" in lines and "resnet export runs/r34 --format onnx" in lines

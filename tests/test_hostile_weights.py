"""Weights files that are hostile, odd or foreign: decompression bombs, files of another kind named ``.pt``,
tampered safetensors metadata, non-finite weights, Lightning checkpoints, special files."""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from resnet_cli.config import ModelConfig, PreprocessConfig
from resnet_cli.errors import CheckpointError, ConfigError
from resnet_cli.io.checkpoint import check_archive, identify_file, load_checkpoint
from resnet_cli.io.weights import SAFETENSORS_FORMAT, adapt_state_dict, load_weights, read_state_dict
from resnet_cli.models import build_model
from tests.conftest import ROOT, run_cli
from tests.images import write_png

BOMB_MIB = 512


class _Storage:
    """Stands for the storage record ``data/0`` in the pickle (a persistent id, as torch.save writes it)."""


class _Tensor:
    def __init__(self, numel: int) -> None:
        self.numel = numel

    def __reduce__(self):
        args = (_Storage(), 0, (self.numel,), (1,), False, collections.OrderedDict())
        return torch._utils._rebuild_tensor_v2, args


def write_zip_bomb(path: Path, mib: int = BOMB_MIB) -> Path:
    """A torch-format checkpoint whose one storage is ``mib`` MiB of zeros, deflated to about a thousandth:
    ``torch.load`` would inflate all of it into memory."""
    numel = mib << 20

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.ByteStorage, "0", "cpu", numel) if isinstance(obj, _Storage) else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"model": {"fc.weight": _Tensor(numel)}})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/byteorder", "little")
        info = zipfile.ZipInfo("archive/data/0")
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as member:
            chunk = bytes(1 << 20)
            for _ in range(mib):
                member.write(chunk)
        archive.writestr("archive/version", "3\n")
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    path = write_zip_bomb(tmp_path_factory.mktemp("bomb") / "bomb.pt")
    assert path.stat().st_size < 2 * 2**20  # about 0.5 MB on disk for 512 MiB of contents
    return path


def test_zip_bomb_is_refused_by_every_loader_without_inflating_it(bomb):
    # A fresh process, so its peak memory (ru_maxrss) tells whether the bomb's contents were allocated.
    script = f"""
import json, resource, sys
import torch
from resnet_cli.errors import CheckpointError
from resnet_cli.io.checkpoint import load_checkpoint, read_project_checkpoint
from resnet_cli.io.weights import load_weights, read_state_dict
from resnet_cli.models.summary import summarize
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
messages = []
for load in (load_checkpoint, read_project_checkpoint, load_weights, read_state_dict):
    try:
        load({str(bomb)!r})
    except CheckpointError as exc:
        messages.append(str(exc))
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({{"grown_kib": grown, "messages": messages}}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert len(doc["messages"]) == 4
    assert all("decompression bomb" in m and str(bomb) in m for m in doc["messages"])
    assert doc["grown_kib"] < 64 * 1024, doc  # far below the 512 MiB the bomb would inflate to


@pytest.mark.parametrize("command", ["summary", "eval", "export", "predict"])
def test_zip_bomb_exits_2_from_every_command(bomb, tmp_path, command):
    args = {"predict": [write_png(tmp_path / "a.png")], "eval": ["--no-save"]}.get(command, [])
    proc = run_cli(command, bomb, *args)
    assert proc.returncode == 2, proc.stderr
    assert "decompression bomb" in proc.stderr and "Traceback" not in proc.stderr


def test_zip_bomb_as_init_is_refused(bomb, small_split, tmp_path):
    proc = run_cli(
        "train", "--data", small_split, "--arch", "18", "--epochs", "1", "--max-steps", "1",
        "--init", bomb, "--out", tmp_path / "run", "-j", "0", "-q",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "decompression bomb" in proc.stderr


def test_checkpoint_far_larger_than_the_architecture_needs(tmp_path):
    path = tmp_path / "big.pt"
    torch.save({"fc.weight": torch.zeros(6_000_000)}, path)  # 24 MB, stored uncompressed: not a bomb
    check_archive(path)
    with pytest.raises(CheckpointError, match="far more than weights for 1,000 parameters"):
        read_state_dict(path, expected_parameters=1000)
    assert read_state_dict(path, expected_parameters=1_000_000)["fc.weight"].numel() == 6_000_000


def test_legacy_format_is_refused_before_loading(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(3)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=r"legacy .* format.*save it again with torch\.save"):
        load_checkpoint(path)


def _onnx_file(path: Path) -> Path:
    import contextlib
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), dynamo=True).save(str(path))
    return path


def _torchscript_file(path: Path) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)), str(path))
    return path


FOREIGN = {
    "random bytes": (lambda p: p.write_bytes(os.urandom(300)) and p, "not a file format resnet knows"),
    "PNG renamed .pt": (lambda p: write_png(p.with_suffix(".png")).rename(p), "is a PNG image, not a checkpoint"),
    "CSV": (lambda p: p.write_text("path,label\na.png,cat\n") and p, "is a CSV text file, not a checkpoint"),
    "JPEG": (lambda p: p.write_bytes(b"\xff\xd8\xff\xe0" + bytes(100)) and p, "is a JPEG image"),
    "ONNX": (_onnx_file, "is an ONNX model, not a checkpoint: 'resnet predict' takes it"),
    "TorchScript": (_torchscript_file, "is a TorchScript program"),
    "zip": (lambda p: zipfile.ZipFile(p, "w").writestr("a.txt", "hello") or p, "zip archive that is not a torch"),
}


@pytest.mark.parametrize("name", FOREIGN)
def test_foreign_files_are_named_as_what_they_are(tmp_path, name):
    make, fragment = FOREIGN[name]
    path = tmp_path / "weights.pt"
    make(path)
    for load in (load_weights, read_state_dict, load_checkpoint):
        with pytest.raises(CheckpointError) as caught:
            load(path)
        message = str(caught.value)
        assert fragment in message and str(path) in message
        assert "pickled" not in message and "write it again" not in message
    if name != "ONNX":
        assert "best.pt" in message or "torch.jit.load" in message  # what to pass instead


@pytest.mark.parametrize("command", ["eval", "summary", "export"])
def test_foreign_files_from_the_command_line_leak_no_python_warning(tmp_path, command):
    path = _torchscript_file(tmp_path / "model.torchscript.pt")
    proc = run_cli(command, path, real_process=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")  # one line, no UserWarning
    assert "TorchScript program" in proc.stderr


def test_special_files_as_weights_do_not_hang(tmp_path):
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    (tmp_path / "zero.pt").symlink_to("/dev/zero")
    image = write_png(tmp_path / "a.png")
    for path, words in ((fifo, "a FIFO"), (tmp_path / "zero.pt", "a character device")):
        proc = run_cli("predict", path, image, real_process=True, timeout=120)
        assert proc.returncode == 2 and words in proc.stderr and str(path) in proc.stderr


# -- safetensors whose metadata lies ----------------------------------------------------------------------------


def _metadata(cfg: ModelConfig, classes: list[str], pre: PreprocessConfig) -> dict[str, str]:
    return {
        "format": SAFETENSORS_FORMAT,
        "model": json.dumps(cfg.to_dict()),
        "classes": json.dumps(classes),
        "preprocess": json.dumps(pre.to_dict()),
        "num_classes": str(cfg.num_classes),
        "in_channels": str(cfg.in_channels),
        "image_size": str(pre.image_size),
    }


CFG = ModelConfig("resnet18", num_classes=3, in_channels=1, small_input=True)
PRE = PreprocessConfig(image_size=8, resize_size=8, in_channels=1, mean=(0.5,), std=(0.25,), normalize="dataset")
CLASSES = ["cat", "dog", "owl"]


def _state(cfg: ModelConfig = CFG) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model(cfg.arch, cfg.num_classes, cfg.in_channels, cfg.small_input).state_dict()


def write_export(path: Path, state=None, overrides: dict[str, str | None] | None = None) -> Path:
    """A safetensors export as ``resnet export`` writes it, with metadata entries replaced (None: left out)."""
    meta = _metadata(CFG, CLASSES, PRE)
    meta.update(overrides or {})
    meta = {k: v for k, v in meta.items() if v is not None}
    save_file({k: v.contiguous() for k, v in (state if state is not None else _state()).items()}, path, metadata=meta)
    return path


def test_a_sound_crafted_export_predicts(tmp_path):
    path = write_export(tmp_path / "ok.safetensors")
    proc = run_cli("predict", path, write_png(tmp_path / "a.png", size=8), "--json")
    assert proc.returncode == 0, proc.stderr
    top = json.loads(proc.stdout)["predictions"][0]["top"]
    assert {t["class"] for t in top} == set(CLASSES)


TAMPERED = {
    "too few class names": (
        {"classes": json.dumps(["cat", "dog"])},
        "2 class names for a 3-way classifier",
    ),
    "huge image_size": (
        {"preprocess": json.dumps({**PRE.to_dict(), "image_size": 100_000}), "image_size": "100000"},
        "image_size 100000",
    ),
    "huge resize_size": ({"preprocess": json.dumps({**PRE.to_dict(), "resize_size": 10**6})}, "resize_size 1000000"),
    "two input channels": (
        {"model": json.dumps({**CFG.to_dict(), "in_channels": 2}), "in_channels": "2"},
        "in_channels 2",
    ),
    "num_classes bigger than the head": (
        {"model": json.dumps({**CFG.to_dict(), "num_classes": 4}), "num_classes": "4", "classes": '["a","b","c","d"]'},
        "'fc.weight' has shape (3, 512)",
    ),
    "flat entry contradicts the JSON": ({"image_size": "4000"}, "contradictory metadata: image_size"),
    "unknown architecture": ({"model": json.dumps({**CFG.to_dict(), "arch": "resnet35"})}, "unknown architecture"),
    "std of zero": ({"preprocess": json.dumps({**PRE.to_dict(), "std": [0.0]})}, "std"),
    "classes not JSON": ({"classes": "cat,dog,owl"}, "damaged metadata"),
    "no model entry": ({"model": None}, "lacks the metadata entry 'model'"),
}


@pytest.mark.parametrize("name", TAMPERED)
def test_tampered_safetensors_metadata_is_refused(tmp_path, name):
    overrides, fragment = TAMPERED[name]
    path = write_export(tmp_path / "tampered.safetensors", overrides=overrides)
    with pytest.raises(CheckpointError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_weights(path)
    proc = run_cli("predict", path, write_png(tmp_path / "a.png", size=8))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and str(path) in proc.stderr


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda s: s.pop("layer3.1.bn2.running_var"), "lacks the tensor 'layer3.1.bn2.running_var'"),
        (lambda s: s.__setitem__("layer2.0.conv1.weight", torch.zeros(128, 64, 1, 1)), "'layer2.0.conv1.weight'"),
        (lambda s: s.__setitem__("extra.weight", torch.zeros(2)), "'extra.weight'"),
        (lambda s: s["fc.bias"].__setitem__(1, float("nan")), "NaN or infinite weights (fc.bias)"),
        (lambda s: s["conv1.weight"].view(-1).__setitem__(0, float("inf")), "NaN or infinite weights (conv1.weight)"),
    ],
)
def test_missing_misshapen_and_nonfinite_tensors_are_named(tmp_path, change, fragment):
    state = _state()
    change(state)
    path = write_export(tmp_path / "w.safetensors", state=state)
    with pytest.raises(CheckpointError) as caught:
        load_weights(path)
    assert fragment in str(caught.value)
    proc = run_cli("predict", path, write_png(tmp_path / "a.png", size=8), "--json")
    assert proc.returncode == 2 and proc.stdout == ""  # no `nan` probabilities


def test_nonfinite_weights_refused_for_init_too(tmp_path):
    state = _state()
    state["fc.weight"][0, 0] = float("nan")
    path = tmp_path / "nan.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"NaN or infinite weights \(fc.weight\)"):
        read_state_dict(path)


def test_export_refuses_weights_that_overflow_fp16(tmp_path):
    from resnet_cli.engine.export import export

    state = _state()
    state["fc.weight"][0, 0] = 1e6  # finite in float32, infinite in float16
    path = write_export(tmp_path / "big.safetensors", state=state)
    with pytest.raises(ConfigError, match=r"do not fit fp16 \(fc.weight becomes infinite\)"):
        export(path, out=tmp_path / "half.safetensors", dtype="fp16")
    assert not (tmp_path / "half.safetensors").exists()
    assert export(path, out=tmp_path / "bf16.safetensors", dtype="bf16").path.is_file()


def test_safetensors_named_pt_is_read_as_safetensors(tmp_path):
    path = write_export(tmp_path / "weights.pt")
    assert identify_file(path).kind == "safetensors"
    assert load_weights(path).classes == CLASSES


# -- Lightning checkpoints for --init ---------------------------------------------------------------------------


def write_lightning_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """A checkpoint in the shape Lightning's ModelCheckpoint writes for a LightningModule holding ``self.model``."""
    torch.save(
        {
            "epoch": 4,
            "global_step": 120,
            "pytorch-lightning_version": "2.4.0",
            "state_dict": collections.OrderedDict((f"model.{k}", v) for k, v in state.items()),
            "loops": {"fit_loop": {"state_dict": {}}},
            "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_score": torch.tensor(0.5)}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.001, "params": [0, 1]}]}],
            "lr_schedulers": [],
            "hparams_name": "kwargs",
            "hyper_parameters": {"lr": 0.001, "arch": "resnet18"},
        },
        path,
    )
    return path


def test_lightning_checkpoint_loads_for_init(tmp_path):
    cfg = ModelConfig("resnet18", num_classes=10, in_channels=1, small_input=True)
    source = _state(cfg)
    path = write_lightning_checkpoint(tmp_path / "epoch=4-step=120.ckpt", source)
    model = build_model(cfg.arch, cfg.num_classes, cfg.in_channels, cfg.small_input)
    adapted, notes = adapt_state_dict(read_state_dict(path), model, path)
    assert set(adapted) == set(model.state_dict()) and notes == []
    model.load_state_dict(adapted, strict=True)
    assert torch.equal(model.state_dict()["layer4.1.conv2.weight"], source["layer4.1.conv2.weight"])


def test_lightning_checkpoint_through_train_init(tmp_path, small_split):
    cfg = ModelConfig("resnet18", num_classes=10, in_channels=1, small_input=True)
    path = write_lightning_checkpoint(tmp_path / "lightning.ckpt", _state(cfg))
    proc = run_cli(
        "train", "--data", small_split, "--arch", "18", "--epochs", "1", "--max-steps", "1",
        "--init", path, "--out", tmp_path / "run", "-j", "0", "-q",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "another depth" not in proc.stderr


def test_model_prefix_is_kept_when_stripping_it_fits_worse(tmp_path):
    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = torch.nn.Linear(2, 2)

    wrapper = Wrapper()
    adapted, _ = adapt_state_dict(dict(wrapper.state_dict()), wrapper, "wrapper")
    assert set(adapted) == {"model.weight", "model.bias"}

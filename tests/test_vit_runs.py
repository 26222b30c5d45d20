"""ViT runs through every command: a real run on digits, eval, export (safetensors into torchvision's
VisionTransformer, ONNX and TorchScript parity), predict, summary, plot, and ``--init`` at another image size."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import load_file

from tests.conftest import run_cli

HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript"))
# A plain recipe so two short epochs learn: the ViT defaults (MixUp, CutMix, RandAugment, ...) are for long runs.
PLAIN = ["--mixup", "0", "--cutmix", "0", "--random-erasing", "0", "--augment", "none", "--label-smoothing", "0",
         "--drop-path", "0", "--warmup-epochs", "0", "--lr", "1e-3"]  # fmt: skip


@pytest.fixture(scope="module")
def vit_run(digits_split, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vit") / "run"
    proc = run_cli(
        "train", "--data", digits_split, "--arch", "vit-ti/4", "--epochs", "2", "--batch-size", "32",
        "--workers", "0", *PLAIN, "--out", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture()
def vit_copy(vit_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(vit_run, copy)
    return copy


@pytest.mark.slow
def test_a_short_vit_run_on_digits_clearly_beats_chance(vit_run):
    config = json.loads((vit_run / "config.json").read_text())
    assert config["model"] == {"arch": "vit_ti_4", "num_classes": 10, "in_channels": 1, "small_input": False,
                               "image_size": 8}  # fmt: skip
    assert config["train"]["schedule"] == "cosine" and config["train"]["optimizer"] == "adamw"  # the ViT family's
    proc = run_cli("eval", vit_run, "--json", "--no-save")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["top1"] > 0.6  # chance is 0.1


@pytest.mark.slow
def test_safetensors_export_loads_into_torchvisions_vision_transformer(vit_copy):
    proc = run_cli("export", vit_copy, "--json")
    assert proc.returncode == 0, proc.stderr
    state = load_file(vit_copy / "model.safetensors")
    tv = torchvision.models.VisionTransformer(
        image_size=8, patch_size=4, num_layers=12, num_heads=3, hidden_dim=192, mlp_dim=768, num_classes=10
    )
    tv.conv_proj = torch.nn.Conv2d(1, 192, kernel_size=4, stride=4)  # greyscale: one input channel
    tv.load_state_dict(state, strict=True)
    from resnet_cli.io.weights import load_weights

    ours = load_weights(vit_copy).build()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv.eval()(x), atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "fmt",
    ["torchscript", pytest.param("onnx", marks=pytest.mark.skipif(not HAS_ONNX, reason="the [onnx] extra is absent"))],
)
def test_onnx_and_torchscript_exports_pass_their_parity_check(vit_copy, fmt):
    proc = run_cli("export", vit_copy, "--format", fmt, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["parity"]["max_abs_diff"] < 1e-3 and doc["parity"]["top1_agreement"] == 1.0, doc
    if fmt == "torchscript":
        module = torch.jit.load(doc["path"])
        assert module(torch.randn(3, 1, 8, 8)).shape == (3, 10)  # any batch size
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(doc["path"], providers=["CPUExecutionProvider"])
        assert session.run(None, {"input": torch.randn(5, 1, 8, 8).numpy()})[0].shape == (5, 10)


@pytest.mark.slow
def test_predict_summary_and_plot_work_on_a_vit_run(vit_copy, digits_split):
    image = sorted((digits_split / "7").iterdir())[0]
    proc = run_cli("predict", vit_copy, image, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["predictions"][0]["top"][0]["class"] in [str(d) for d in range(10)]
    proc = run_cli("summary", vit_copy, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["input_shape"] == [1, 1, 8, 8] and doc["model"]["arch"] == "vit_ti_4"
    assert run_cli("plot", vit_copy).returncode == 0
    assert (vit_copy / "curves.png").stat().st_size > 0


@pytest.mark.slow
def test_init_at_another_image_size_interpolates_the_position_embeddings(vit_run, digits_split, tmp_path):
    out = tmp_path / "r16"
    proc = run_cli(
        "train", "--data", digits_split, "--arch", "vit-ti/4", "--image-size", "16", "--init", vit_run,
        "--epochs", "1", "--max-steps", "1", "--batch-size", "8", "--workers", "0", *PLAIN, "--out", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "position embeddings interpolated from 4 to 16 patches" in proc.stderr
    # What --init loads is torchvision's bicubic interpolation of the 8 px run's embeddings.
    from torchvision.models.vision_transformer import interpolate_embeddings

    from resnet_cli.io.weights import adapt_state_dict, read_state_dict
    from resnet_cli.models import build_model

    source = read_state_dict(vit_run / "best.pt")
    model = build_model("vit_ti_4", num_classes=10, in_channels=1, image_size=16)
    adapted, notes = adapt_state_dict(source, model, "run")
    assert notes == ["position embeddings interpolated from 4 to 16 patches"]
    expected = interpolate_embeddings(16, 4, {"encoder.pos_embedding": source["encoder.pos_embedding"]})
    assert adapted["encoder.pos_embedding"].shape == (1, 17, 192)
    torch.testing.assert_close(adapted["encoder.pos_embedding"], expected["encoder.pos_embedding"], rtol=0, atol=0)
    model.load_state_dict(adapted, strict=True)


@pytest.mark.slow
def test_resnet_weights_do_not_fit_a_vit(trained_run, small_split, tmp_path):
    proc = run_cli(
        "train", "--data", small_split, "--arch", "vit-ti/4", "--init", trained_run, "--epochs", "1",
        "--out", tmp_path / "bad",
    )  # fmt: skip
    assert proc.returncode == 2
    assert "does not fit this architecture" in proc.stderr and "--arch" in proc.stderr
    assert not (tmp_path / "bad").exists()


def test_default_run_folder_of_a_vit(small_split, tmp_path):
    proc = run_cli(
        "train", "--data", small_split, "--arch", "vit-ti/4", "--epochs", "1", "--max-steps", "1", "--workers", "0",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "runs/vit-ti4"
    assert (tmp_path / "runs" / "vit-ti4" / "best.pt").is_file()

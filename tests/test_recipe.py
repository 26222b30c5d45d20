"""The shared recipe: per-family defaults, schedules, optimisers, MixUp/CutMix, random erasing, stochastic depth
and EMA, recorded in config.json, refused when impossible, and kept bit-exact by resume after SIGKILL."""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path

import pytest
import torch
import torchvision

from resnet_cli.config import PreprocessConfig, TrainConfig
from resnet_cli.data.transforms import train_transform
from resnet_cli.engine.recipe import make_optimizer, make_scheduler, resolve_recipe, step_scheduler
from resnet_cli.models import build_model
from tests.conftest import run_cli
from tests.test_train import _popen, _wait_for, load

TINY = ["--batch-size", "16", "--workers", "0"]
# Every recipe option at once (the list), plus RandAugment, label smoothing and gradient clipping.
ALL_ON = [
    "--schedule", "cosine", "--warmup-epochs", "1", "--mixup", "0.8", "--cutmix", "1.0", "--random-erasing", "0.5",
    "--drop-path", "0.2", "--ema", "0.9", "--clip-grad", "1.0", "--augment", "randaugment", "--label-smoothing", "0.1",
]  # fmt: skip


def train_options(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())["train"]


def tensors_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- defaults and checks -------------------------------------------------------------------------------------


def test_family_defaults_follow_the_documented_recipes():
    resnet = resolve_recipe(TrainConfig(arch="resnet34"))
    assert (resnet.optimizer, resnet.lr, resnet.weight_decay, resnet.schedule, resnet.warmup_epochs) == (
        "adamw", 1e-3, 0.05, "plateau", 0,
    )  # fmt: skip
    assert (resnet.label_smoothing, resnet.mixup, resnet.cutmix, resnet.random_erasing, resnet.drop_path) == (0,) * 5
    assert resnet.augment is None  # crop or rrc, chosen from the image size
    vit = resolve_recipe(TrainConfig(arch="vit_s_16", epochs=100))
    assert (vit.optimizer, vit.lr, vit.weight_decay, vit.schedule, vit.warmup_epochs) == (
        "adamw", 5e-4, 0.05, "cosine", 5,
    )  # fmt: skip
    assert (vit.label_smoothing, vit.mixup, vit.cutmix, vit.random_erasing, vit.drop_path, vit.augment) == (
        0.1, 0.8, 1.0, 0.25, 0.1, "randaugment",
    )  # fmt: skip
    assert resolve_recipe(TrainConfig(arch="vit_s_16", epochs=12)).warmup_epochs == 2  # short runs warm up less
    sgd = resolve_recipe(TrainConfig(arch="resnet50", optimizer="sgd", batch_size=128))
    assert (sgd.lr, sgd.weight_decay) == (0.05, 1e-4)  # 0.1 x 128/256, torchvision's reference decay
    given = resolve_recipe(TrainConfig(arch="vit_ti_4", mixup=0.0, lr=3e-3, schedule="step"))
    assert (given.mixup, given.lr, given.schedule, given.cutmix) == (0.0, 3e-3, "step", 1.0)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--optimizer", "lamb"], "--optimizer 'lamb'"),
        (["--schedule", "linear"], "--schedule 'linear'"),
        (["--warmup-epochs", "5", "--epochs", "5"], "--warmup-epochs must be 0 or more and less than --epochs (5)"),
        (["--warmup-epochs", "-1"], "--warmup-epochs"),
        (["--clip-grad", "-1"], "--clip-grad"),
        (["--clip-grad", "nan"], "--clip-grad"),
        (["--mixup", "-0.5"], "--mixup must be an alpha"),
        (["--cutmix", "inf"], "--cutmix must be an alpha"),
        (["--random-erasing", "1.5"], "--random-erasing must be a probability"),
        (["--drop-path", "1"], "--drop-path must be in [0, 1)"),
        (["--ema", "1"], "--ema must be a decay in (0, 1)"),
        (["--ema", "-0.9"], "--ema must be a decay"),
        (["--label-smoothing", "1"], "--label-smoothing"),
        (["--lr", "0"], "--lr must be a positive number"),
        (["--weight-decay", "-1"], "--weight-decay"),
        (["--augment", "augmix"], "unknown --augment 'augmix'"),
        (["--arch", "vit-s/16", "--small-input"], "ViT takes a smaller patch"),
        (["--arch", "vit-s/16"], "8 px does not fit ViT-S/16"),  # 8 px digits and 16 px patches
    ],
)
def test_bad_recipe_values_exit_2_and_touch_nothing(small_split, tmp_path, args, fragment):
    out = tmp_path / "run"
    proc = run_cli("train", "--data", small_split, *TINY, "--epochs", "3", "--out", out, *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], proc.stderr
    assert not out.exists()


# --- schedules and optimisers --------------------------------------------------------------------------------


def _lrs(config: TrainConfig, losses: list[float]) -> list[float]:
    model = torch.nn.Linear(2, 2)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config)
    lrs = []
    for loss in losses:
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: nothing moves, but the schedule sees the order training uses
        step_scheduler(scheduler, loss)
    return lrs


def test_cosine_with_linear_warm_up():
    config = resolve_recipe(TrainConfig(arch="18", epochs=6, schedule="cosine", warmup_epochs=2, lr=0.3, min_lr=0.0))
    lrs = _lrs(config, [1.0] * 6)
    # Warm-up: lr/(w+1), 2 lr/(w+1); then the cosine from lr over the remaining 4 epochs.
    expected = [0.1, 0.2, 0.3, *(0.15 * (1 + math.cos(math.pi * k / 4)) for k in (1, 2, 3))]
    assert lrs == pytest.approx(expected, abs=1e-9)


def test_step_schedule_decays_at_a_third_and_two_thirds():
    config = resolve_recipe(TrainConfig(arch="18", epochs=9, schedule="step", lr=1.0, lr_factor=0.1))
    assert _lrs(config, [1.0] * 9) == pytest.approx([1.0] * 3 + [0.1] * 3 + [0.01] * 3)


def test_plateau_after_warm_up_reads_the_validation_loss():
    config = resolve_recipe(
        TrainConfig(arch="18", epochs=9, schedule="plateau", warmup_epochs=1, lr=1.0, lr_patience=0, lr_factor=0.5)
    )
    # Epoch 1 warms up at lr/2. The plateau scheduler first sees epoch 2's loss (its best so far); epochs 3 and 4
    # bring no gain, so each halves the rate.
    assert _lrs(config, [9.0, 1.0, 1.0, 1.0, 1.0]) == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.25])


def test_sgd_is_nesterov_and_embeddings_norms_and_biases_skip_decay():
    model = build_model("vit_ti_4", num_classes=3, image_size=8)
    optimizer = make_optimizer(model, resolve_recipe(TrainConfig(arch="vit_ti_4", optimizer="sgd")))
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["nesterov"] and optimizer.defaults["momentum"] == 0.9
    decayed = {id(p) for p in optimizer.param_groups[0]["params"]}
    names = {name for name, p in model.named_parameters() if id(p) in decayed}
    assert "class_token" not in names and "encoder.pos_embedding" not in names
    assert "conv_proj.weight" in names and not any(n.endswith((".bias", "ln_1.weight")) for n in names)


# --- augmentation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment", "autoaugment"])
def test_policies_are_seeded_per_sample_and_change_images(policy):
    pre = PreprocessConfig(image_size=32, resize_size=32, in_channels=3, augment=policy, random_erasing=0.5)
    transform = train_transform(pre)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    outputs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        outputs.append(transform(image))
    assert torch.equal(outputs[0], outputs[1])  # the same seed, the same augmentation
    assert not torch.equal(outputs[0], outputs[2])
    assert any(isinstance(t, torchvision.transforms.v2.RandomErasing) for t in transform.transforms)


# --- real runs -------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "extra"), [("18", ["--optimizer", "sgd"]), ("vit-ti/2", [])])
def test_sigkill_with_every_recipe_option_then_resume_is_bit_exact(small_split, tmp_path, arch, extra):
    args = ["--data", small_split, "--arch", arch, *TINY, "--epochs", "2", *ALL_ON, *extra]
    reference = tmp_path / "reference"
    proc = run_cli("train", *args, "--out", reference)
    assert proc.returncode == 0, proc.stderr
    options = train_options(reference)
    assert (options["schedule"], options["mixup"], options["cutmix"], options["ema"]) == ("cosine", 0.8, 1.0, 0.9)

    out = tmp_path / "run"
    killed = _popen("train", *args, "--save-every", "2", "--out", out)
    _wait_for(out / "history.csv", killed)  # epoch 1 done
    mtime = (out / "last.pt").stat().st_mtime_ns
    deadline = time.monotonic() + 60
    while (out / "last.pt").stat().st_mtime_ns == mtime and time.monotonic() < deadline:
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    state = load(out / "last.pt")
    assert state["epoch"] == 1 and state["loader"]["batches_done"] > 0  # killed mid-epoch
    resumed = run_cli("train", "--resume", "--out", out)
    assert resumed.returncode == 0, resumed.stderr

    for name in ("last.pt", "best.pt"):
        ours, theirs = load(out / name), load(reference / name)
        assert tensors_equal(ours["model"], theirs["model"]), name
        assert tensors_equal(ours["ema"], theirs["ema"]), name
    assert (out / "history.csv").read_text().splitlines()[0].endswith("ema_val_loss,ema_val_acc")
    columns = [0, 1, 2, 3, 4, 5, 8, 9, 10, 11]  # everything but the timings
    rows = [[line.split(",")[i] for i in columns] for line in (out / "history.csv").read_text().splitlines()]
    ref_rows = [[line.split(",")[i] for i in columns] for line in (reference / "history.csv").read_text().splitlines()]
    assert rows == ref_rows


@pytest.mark.slow
def test_ema_weights_are_used_by_eval_export_and_predict_unless_no_ema(small_split, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train", "--data", small_split, "--arch", "18", *TINY, "--epochs", "2", "--ema", "0.5", "--out", out)
    assert proc.returncode == 0, proc.stderr
    best = load(out / "best.pt")
    assert not tensors_equal(best["model"], best["ema"])
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].endswith(",ema_val_loss,ema_val_acc") and all(line.split(",")[-1] for line in history[1:])

    with_ema = json.loads(run_cli("eval", out, "--split", "val", "--json", "--no-save").stdout)
    raw = json.loads(run_cli("eval", out, "--split", "val", "--json", "--no-save", "--no-ema").stdout)
    assert "moving average" in with_ema["checkpoint"] and "moving average" not in raw["checkpoint"]
    assert with_ema["loss"] != raw["loss"]
    # The run's best val loss is the moving average's (the weights of record), which eval reproduces.
    assert with_ema["loss"] == pytest.approx(json.loads((out / "run.json").read_text())["best_val_loss"], rel=1e-5)
    # Saved reports: the raw weights get their own files, so the report of record (what a study reads) stays.
    assert run_cli("eval", out, "--split", "val").returncode == 0
    of_record = (out / "eval-val.json").read_bytes()
    assert run_cli("eval", out, "--split", "val", "--no-ema").returncode == 0
    assert (out / "eval-val.json").read_bytes() == of_record
    assert json.loads((out / "eval-val-raw.json").read_text())["loss"] == pytest.approx(raw["loss"], rel=1e-6)
    assert (out / "predictions-val-raw.csv").is_file()

    from safetensors.torch import load_file

    for flag, key in (("--ema", "ema"), ("--no-ema", "model")):
        target = tmp_path / f"{key}.safetensors"
        assert run_cli("export", out, "--out", target, flag).returncode == 0
        exported = load_file(target)
        assert tensors_equal(exported, {k: v for k, v in best[key].items()})
    # An export of the moving average holds no raw weights: --no-ema on it is refused, not silently ignored.
    refused = run_cli("eval", tmp_path / "ema.safetensors", "--no-ema", "--no-save", "--split", "val")
    assert refused.returncode == 2 and "holds only the moving average" in refused.stderr
    # Default names: the raw weights never replace the export of record.
    assert run_cli("export", out).returncode == 0
    of_record = (out / "model.safetensors").read_bytes()
    assert run_cli("export", out, "--no-ema").returncode == 0
    assert (out / "model.safetensors").read_bytes() == of_record
    assert tensors_equal(load_file(out / "model-raw.safetensors"), best["model"])
    # Exporting a file onto itself would replace its provenance with itself: refused.
    itself = run_cli("export", out / "model.safetensors")
    assert itself.returncode == 2 and "is the file being exported" in itself.stderr
    assert (out / "model.safetensors").read_bytes() == of_record
    # --init from the run starts from its weights of record, the moving average.
    from resnet_cli.io.weights import read_state_dict

    assert tensors_equal(read_state_dict(out / "best.pt"), best["ema"])
    image = next((small_split / "3").iterdir())
    first = json.loads(run_cli("predict", out, image, "--json").stdout)
    second = json.loads(run_cli("predict", out, image, "--json", "--no-ema").stdout)
    assert first != second
    # An ONNX export of the moving average cannot honour --no-ema either.
    assert run_cli("export", out, "--format", "onnx").returncode == 0
    onnx_refused = run_cli("predict", out / "model.onnx", image, "--no-ema")
    assert onnx_refused.returncode == 2 and "holds only the moving average" in onnx_refused.stderr
    assert run_cli("predict", out / "model.onnx", image).returncode == 0


@pytest.mark.slow
def test_cosine_run_cannot_be_extended_on_resume(small_split, tmp_path):
    out = tmp_path / "run"
    args = ["--data", small_split, "--arch", "18", *TINY, "--epochs", "1", "--max-steps", "2", "--schedule", "cosine"]
    assert run_cli("train", *args, "--out", out).returncode == 0
    proc = run_cli("train", "--resume", "--out", out, "--epochs", "3")
    assert proc.returncode == 2
    assert "cosine schedule is laid out over 1 epochs" in proc.stderr and "--init" in proc.stderr

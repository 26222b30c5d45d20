"""Training: a real run, exact resume after SIGKILL and SIGINT, non-finite losses, full disks, bad options."""

from __future__ import annotations

import csv
import json
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torchvision

from resnet_cli.config import TrainConfig
from resnet_cli.engine.callbacks import Callback
from resnet_cli.engine.train import fit
from resnet_cli.errors import RunFailedError
from resnet_cli.io.checkpoint import clean_state_dict, unwrap_model
from resnet_cli.models import build_model
from tests.conftest import ROOT, run_cli

# Small, quick settings shared by the subprocess runs (8x8 digits, resnet18).
FAST = ["--arch", "18", "--batch-size", "16", "--workers", "0"]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def same_weights(a: Path, b: Path) -> bool:
    sa, sb = load(a)["model"], load(b)["model"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def one_error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.slow
def test_real_run_beats_chance_and_writes_the_run_folder(digits_split, tmp_path):
    out = tmp_path / "r18"
    proc = run_cli("train", "--data", digits_split, *FAST, "--batch-size", "32", "--epochs", "2", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{out}\n"
    assert "epoch 2/2" in proc.stderr and "img/s" in proc.stderr  # one plain line per epoch outside a terminal
    assert {"config.json", "classes.json", "history.csv", "last.pt", "best.pt", "run.json"} <= {
        p.name for p in out.iterdir()
    }
    with open(out / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert set(rows[0]) == {
        "epoch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "lr",
        "epoch_time",
        "images_per_s",
        "train_eval_loss",
        "train_eval_acc",
    }
    assert float(rows[-1]["val_acc"]) > 0.5  # chance is 0.1
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == {"arch": "resnet18", "num_classes": 10, "in_channels": 1, "small_input": True,
                               "image_size": None}  # fmt: skip
    assert config["preprocess"]["image_size"] == 8 and config["train"]["precision"] in ("fp32", "bf16")
    assert len(config["manifest"]["sha256"]) == 64 and config["versions"]["torch"] == str(torch.__version__)
    assert json.loads((out / "classes.json").read_text()) == [str(d) for d in range(10)]
    # Checkpoints: plain values only, clean torchvision keys.
    for name in ("best.pt", "last.pt"):
        ckpt = load(out / name)
        assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["model"])
    tv = torchvision.models.resnet18(num_classes=10)
    tv.conv1 = torch.nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    tv.maxpool = torch.nn.Identity()
    tv.load_state_dict(load(out / "best.pt")["model"], strict=True)


def test_summary_of_a_run(trained_run):
    proc = run_cli("summary", trained_run, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["model"]["num_classes"] == 10 and doc["input_shape"] == [1, 1, 8, 8]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {path} appeared: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.02)


def _popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "resnet_cli", *map(str, args)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def reference_run(small_split, tmp_path_factory) -> Path:
    """The uninterrupted run the interrupted ones must match."""
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = run_cli("train", "--data", small_split, *FAST, "--epochs", "3", "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_exact(small_split, reference_run, tmp_path):
    out = tmp_path / "run"
    # --save-every 2 writes mid-epoch checkpoints; kill right after the first one lands in epoch 2.
    proc = _popen("train", "--data", small_split, *FAST, "--epochs", "3", "--save-every", "2", "--out", out)
    _wait_for(out / "history.csv", proc)  # epoch 1 done
    mtime = (out / "last.pt").stat().st_mtime_ns
    deadline = time.monotonic() + 60
    while (out / "last.pt").stat().st_mtime_ns == mtime and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = load(out / "last.pt")
    assert state["epoch"] == 1 and state["loader"]["batches_done"] > 0  # a mid-epoch checkpoint
    resumed = run_cli("train", "--resume", "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stderr
    assert same_weights(out / "last.pt", reference_run / "last.pt")
    assert same_weights(out / "best.pt", reference_run / "best.pt")
    ref_hist = [r.split(",")[:6] for r in (reference_run / "history.csv").read_text().splitlines()]
    assert [r.split(",")[:6] for r in (out / "history.csv").read_text().splitlines()] == ref_hist


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_resumable_checkpoint(small_split, reference_run, tmp_path, sig, code):
    out = tmp_path / "run"
    proc = _popen("train", "--data", small_split, *FAST, "--epochs", "3", "--save-every", "1", "--out", out)
    _wait_for(out / "last.pt", proc)
    proc.send_signal(sig)
    if sig == signal.SIGINT:
        time.sleep(0.05)
        proc.send_signal(sig)  # a second Ctrl-C while saving must not corrupt anything
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "resnet train --resume" in stderr and "Traceback" not in stderr
    state = load(out / "last.pt")
    assert state["loader"]["batches_done"] > 0  # written at the step the signal interrupted, not an epoch end
    resumed = run_cli("train", "--resume", "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert same_weights(out / "last.pt", reference_run / "last.pt")


@pytest.mark.slow
def test_ctrl_c_to_the_process_group_with_workers(small_split, reference_run, tmp_path):
    # A terminal's Ctrl-C reaches the workers too; they must not die before the checkpoint is written.
    out = tmp_path / "run"
    args = ["train", "--data", small_split, "--arch", "18", "--batch-size", "16", "--workers", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "resnet_cli", *map(str, args), "--epochs", "3", "--save-every", "1", "--out", str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _wait_for(out / "last.pt", proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert load(out / "last.pt")["loader"]["batches_done"] > 0
    resumed = run_cli("train", "--resume", "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert same_weights(out / "last.pt", reference_run / "last.pt")  # workers do not change the result


def test_image_damaged_after_the_split_is_named_without_traceback(small_copy, tmp_path):
    rows = (small_copy / "manifest.csv").read_text().splitlines()
    victim = small_copy / next(r.split(",")[0] for r in rows if ",train," in r)
    victim.write_bytes(victim.read_bytes()[:20] + b"\0" * (victim.stat().st_size - 20))  # same size, bad data
    proc = run_cli("train", "--data", small_copy, *FAST, "--workers", "1", "--epochs", "1", "--out", tmp_path / "r")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert victim.name in line and "resnet split" in line and "Original Traceback" not in line


def test_resume_extends_a_finished_run_and_refuses_changes(small_copy, tmp_path):
    out = tmp_path / "run"
    assert (
        run_cli("train", "--data", small_copy, *FAST, "--epochs", "1", "--max-steps", "3", "--out", out).returncode == 0
    )
    again = run_cli("train", "--resume", "--out", out)
    assert again.returncode == 2 and "--epochs with more than 1" in one_error_line(again)
    changed = run_cli("train", "--resume", "--out", out, "--epochs", "3", "--lr", "0.1")
    assert changed.returncode == 2 and "cannot change --lr" in one_error_line(changed)
    arch = run_cli("train", "--resume", "--out", out, "--epochs", "3", "--arch", "34")
    assert arch.returncode == 2 and "cannot change --arch" in one_error_line(arch)
    # Killed after the last checkpoint but before the summary: resuming only writes the summary.
    weights = (out / "last.pt").read_bytes()
    (out / "run.json").unlink()
    finish = run_cli("train", "--resume", "--out", out)
    assert finish.returncode == 0, finish.stderr
    assert "writing its summary" in finish.stderr and (out / "run.json").is_file()
    assert (out / "last.pt").read_bytes() == weights
    extended = run_cli("train", "--resume", "--out", out, "--epochs", "2")
    assert extended.returncode == 0, extended.stderr
    assert len((out / "history.csv").read_text().splitlines()) == 3
    # A re-split dataset is a different dataset.
    resplit = run_cli("split", small_copy, "--val", "0.3", "--seed", "9", "--force")
    assert resplit.returncode == 0
    changed_data = run_cli("train", "--resume", "--out", out, "--epochs", "3")
    assert changed_data.returncode == 2
    assert "differs from the manifest the run started with" in one_error_line(changed_data)


def test_existing_run_needs_resume_or_force(small_split, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", small_split, *FAST, "--epochs", "1", "--max-steps", "2", "--out", out]
    assert run_cli(*args).returncode == 0
    assert run_cli("eval", out, "--quiet").returncode == 0
    refused = run_cli(*args)
    assert refused.returncode == 2 and "--resume" in one_error_line(refused) and "--force" in refused.stderr
    forced = run_cli(*args, "--force")
    assert forced.returncode == 0 and not (out / "eval-test.json").exists()


def test_nonfinite_loss_stops_with_exit_1_and_keeps_the_checkpoint(small_split, tmp_path):
    out = tmp_path / "run"
    config = TrainConfig(data=str(small_split), arch="18", epochs=2, batch_size=16, out=str(out), workers=0)
    fit(replace(config, epochs=1))
    before = (out / "last.pt").read_bytes()

    class Poison(Callback):
        """Corrupts one weight after the third step of epoch 2, as a diverging run would."""

        def on_train_start(self, info):
            self.model = info["network"]

        def on_batch_end(self, epoch, stats):
            if epoch == 2 and stats.step == 3:
                with torch.no_grad():
                    self.model.fc.weight[0, 0] = float("nan")

    with pytest.raises(RunFailedError, match=r"loss became nan at epoch 2, step 4"):
        fit(config, resume=True, callbacks=[Poison()])
    assert (out / "last.pt").read_bytes() == before


def test_diverging_cli_run_exits_1(small_split, tmp_path):
    proc = run_cli("train", "--data", small_split, *FAST, "--epochs", "2", "--lr", "1e30", "--out", tmp_path / "run")
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc)
    assert "diverged" in line and "at epoch" in line and "lower --lr" in line


def test_full_disk_keeps_the_previous_checkpoint(small_split, tmp_path):
    out = tmp_path / "run"
    assert (
        run_cli("train", "--data", small_split, *FAST, "--epochs", "1", "--max-steps", "2", "--out", out).returncode
        == 0
    )
    before = (out / "last.pt").read_bytes()

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    proc = run_cli("train", "--resume", "--epochs", "2", "--out", out, preexec_fn=limit_file_size)
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc)
    assert "could not write" in line and "previous version is intact" in line
    assert (out / "last.pt").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert load(out / "last.pt")["epoch"] == 1


def test_gpus_without_cuda_fails_before_reading_data(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = run_cli("train", "--data", tmp_path / "no-such-folder", "--gpus", "0,1")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "--gpus 0,1 needs CUDA GPUs; available: none" in line


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--lr", "-1"], "--lr must be a positive number"),
        (["--arch", "35"], "18, 34, 50, 101, 152"),
        (["--precision", "fp16"], "fp16 needs a CUDA GPU"),
        (["--precision", "fp8"], "unknown precision"),
        (["--device", "cuda:3"], "available"),
        (["--device", "tpu"], "unknown device"),
        (["--gpus", "a,b"], "comma-separated GPU numbers"),
        (["--image-size", "16", "--no-small-input"], "too small"),
        (["--augment", "mixup"], "unknown --augment"),
        (["--lr-factor", "2"], "--lr-factor must be between 0 and 1"),
        (["--resume"], "nothing to resume"),
        (["--init", "missing.pth"], "does not exist"),
        (["--split", "val"], "--split names a part on eval"),
        (["--manifest", "val"], "is a part name, not a manifest file"),
    ],
)
def test_bad_options(small_split, tmp_path, args, fragment):
    if "cuda:3" in args and torch.cuda.device_count() > 3:
        pytest.skip("this machine has a fourth GPU")
    proc = run_cli("train", "--data", small_split, "--out", tmp_path / "run", *args)
    assert proc.returncode == 2, proc.stderr
    assert fragment in one_error_line(proc)


def test_missing_data_folder_says_what_to_run(tmp_path):
    proc = run_cli("train", "--data", tmp_path / "nowhere", "--out", tmp_path / "run")
    assert proc.returncode == 2
    assert "resnet split" in one_error_line(proc)


def test_init_from_torchvision_and_hostile_files(small_split, tmp_path):
    weights = tmp_path / "tv.pth"
    torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), weights)
    proc = run_cli(
        "train", "--data", small_split, *FAST, "--epochs", "1", "--max-steps", "2", "--image-size", "32",
        "--no-small-input", "--init", weights, "--out", tmp_path / "run",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "classifier replaced: 1000 -> 10 classes" in proc.stderr
    assert "summed over RGB" in proc.stderr

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    hostile = tmp_path / "hostile.pth"
    torch.save({"model": Payload()}, hostile)
    proc = run_cli("train", "--data", small_split, *FAST, "--init", hostile, "--out", tmp_path / "run2")
    assert proc.returncode == 2
    assert "not a safe checkpoint" in one_error_line(proc)
    assert not (tmp_path / "pwned").exists()

    wrong = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(num_classes=10).state_dict(), wrong)
    proc = run_cli("train", "--data", small_split, *FAST, "--init", wrong, "--out", tmp_path / "run3")
    assert proc.returncode == 2 and "choose the matching --arch" in one_error_line(proc)


def test_wrappers_never_leak_into_saved_keys():
    model = build_model(18, num_classes=3)
    for wrapped in (torch.nn.DataParallel(model), torch.compile(model), torch.compile(torch.nn.DataParallel(model))):
        assert unwrap_model(wrapped) is model
        keys = clean_state_dict(wrapped.state_dict()).keys()
        assert keys == model.state_dict().keys()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(small_split, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [str(torchrun), "--nproc-per-node", "2", "--master-port", str(_free_port()), "-m", "resnet_cli",
         "train", "--data", str(small_split), *FAST, "--epochs", "2", "--max-steps", "3", "--out", str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == f"{out}\n"  # rank 0 alone prints
    assert sum(line.startswith("run ") for line in proc.stderr.splitlines()) == 1
    config = json.loads((out / "config.json").read_text())
    assert config["placement"]["world_size"] == 2
    assert len((out / "history.csv").read_text().splitlines()) == 3
    assert load(out / "last.pt")["loader"]["world_size"] == 2
    # An epoch-end checkpoint of two processes resumes in one.
    resumed = run_cli("train", "--resume", "--epochs", "3", "--out", out)
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.gpu
def test_dataparallel_amp_on_cuda(small_split, tmp_path):
    out = tmp_path / "gpu"
    proc = run_cli("train", "--data", small_split, *FAST, "--epochs", "1", "--gpus", "0", "--out", out)
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["placement"]["precision"] in ("bf16", "fp16") and config["placement"]["channels_last"]
    assert not any(k.startswith("module.") for k in load(out / "last.pt")["model"])


@pytest.mark.slow
def test_compiled_model_trains_and_saves_clean_keys(small_split, tmp_path):
    out = tmp_path / "compiled"
    proc = run_cli(
        "train", "--data", small_split, *FAST, "--epochs", "1", "--max-steps", "2", "--compile", "--out", out
    )
    assert proc.returncode == 0, proc.stderr
    keys = load(out / "last.pt")["model"].keys()
    assert keys == build_model(18, num_classes=10, in_channels=1, small_input=True).state_dict().keys()
    assert json.loads((out / "config.json").read_text())["train"]["compile"] is True


def test_split_is_the_old_name_of_manifest(small_split, tmp_path):
    proc = run_cli(
        "train", "--data", small_split, "--split", small_split / "manifest.csv", *FAST, "--epochs", "1",
        "--max-steps", "1", "--out", tmp_path / "run",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "now --manifest" in proc.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["manifest"]["path"].endswith("manifest.csv")

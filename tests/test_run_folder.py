"""The run folder: checks before any change, --force removes only the run's own files, one writer at a time,
stale temporaries, the umask, failed starts, numbered default folders, content checks on resume, divergence,
and the checkpoints' contents."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resnet_cli.config import TrainConfig
from resnet_cli.engine.train import fit, train_subset
from resnet_cli.fs import run_lock
from resnet_cli.io.history import read_history
from tests.conftest import ROOT, run_cli

FAST = ["--arch", "18", "--batch-size", "16", "--workers", "0"]


def one_error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(small_split, tmp_path_factory) -> Path:
    """A finished 1-epoch run with an eval report (written by resnet eval). Tests copy it before changing it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    proc = run_cli("train", "--data", small_split, *FAST, "--epochs", "1", "--max-steps", "2", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert run_cli("eval", out, "--quiet").returncode == 0
    return out


@pytest.fixture()
def run_copy(finished_run, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(finished_run, target)
    return target


@pytest.mark.parametrize(
    "bad",
    [
        ["--data", "typo"],
        ["--init", "missing.pth"],
        ["--augment", "bogus"],
        ["--arch", "35"],
        ["--image-size", "16", "--no-small-input"],
    ],
)
def test_force_with_a_bad_option_changes_nothing(small_split, run_copy, bad):
    before = snapshot(run_copy)
    proc = run_cli("train", "--data", small_split, *FAST, "--epochs", "1", "--out", run_copy, "--force", *bad)
    assert proc.returncode == 2, proc.stderr
    one_error_line(proc)
    assert snapshot(run_copy) == before


def test_force_refuses_a_folder_that_is_not_a_run(small_split, tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    mine = {"model.py": "x = 1\n", "config.json": "{}\n", "curves.py": "pass\n", "history.csv": "a,b\n"}
    for name, text in mine.items():
        (folder / name).write_text(text)
    proc = run_cli("train", "--data", small_split, *FAST, "--epochs", "1", "--out", folder, "--force")
    assert proc.returncode == 2
    assert "not a resnet run" in one_error_line(proc)
    assert {p.name: p.read_text() for p in folder.iterdir()} == mine
    # The same through a symlinked --out: the link's target is left alone.
    link = tmp_path / "link"
    link.symlink_to(folder)
    proc = run_cli("train", "--data", small_split, *FAST, "--epochs", "1", "--out", link, "--force")
    assert proc.returncode == 2
    assert {p.name: p.read_text() for p in folder.iterdir()} == mine


def test_force_removes_only_the_runs_own_files(small_split, run_copy):
    (run_copy / "notes.txt").write_text("mine")
    refused = run_cli("train", "--data", small_split, *FAST, "--epochs", "1", "--out", run_copy, "--force")
    assert refused.returncode == 2 and "notes.txt" in one_error_line(refused)
    assert (run_copy / "notes.txt").read_text() == "mine" and (run_copy / "eval-test.json").exists()
    (run_copy / "notes.txt").unlink()
    forced = run_cli(
        "train", "--data", small_split, *FAST, "--epochs", "1", "--max-steps", "2", "--out", run_copy, "--force"
    )
    assert forced.returncode == 0, forced.stderr
    assert not (run_copy / "eval-test.json").exists()  # the old run's report went with it
    assert (run_copy / "best.pt").exists()


def test_an_empty_folder_is_used_and_the_run_needs_resume_or_force(small_split, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    args = ["train", "--data", small_split, *FAST, "--epochs", "1", "--max-steps", "2", "--out", out]
    assert run_cli(*args).returncode == 0
    again = run_cli(*args)
    assert again.returncode == 2
    assert "--resume" in one_error_line(again) and "--force" in again.stderr


def test_a_second_writer_is_refused_naming_the_holder(run_copy, small_split):
    with run_lock(run_copy, "train"):
        for args in (
            ["train", "--resume", "--out", run_copy, "--epochs", "2"],
            ["train", "--data", small_split, *FAST, "--out", run_copy, "--force"],
            ["eval", run_copy, "--force"],
            ["export", run_copy, "--force"],
        ):
            proc = run_cli(*args)
            assert proc.returncode == 2, (args, proc.stderr)
            line = one_error_line(proc)
            assert "in use by 'resnet train'" in line and f"pid {os.getpid()}" in line
    assert not (run_copy / ".resnet.lock").exists()


def test_two_real_trainings_into_one_folder(small_split, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(
        [sys.executable, "-m", "resnet_cli", "train", "--data", str(small_split), *FAST, "--epochs", "50",
         "--out", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out / "config.json").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        second = run_cli("train", "--data", small_split, *FAST, "--epochs", "1", "--out", out, real_process=True)
        assert second.returncode == 2
        assert "in use by 'resnet train'" in one_error_line(second)
    finally:
        first.kill()
        first.wait()
    # The killed holder's lock blocks nobody.
    resumed = run_cli("train", "--resume", "--out", out, "--epochs", "1", "--max-steps", "1")
    assert resumed.returncode in (0, 2), resumed.stderr
    assert "in use" not in resumed.stderr


def test_a_stale_lock_of_a_killed_process_blocks_nobody(run_copy):
    code = (
        "import os\nfrom resnet_cli.fs import run_lock\n"
        f"with run_lock({str(run_copy)!r}, 'eval'):\n    os.kill(os.getpid(), 9)\n"
    )
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert (run_copy / ".resnet.lock").exists()  # left behind by SIGKILL
    with run_lock(run_copy, "train"):
        pass


def test_stale_temporary_checkpoints_are_removed(small_split, run_copy):
    stale = run_copy / ".last.pt.k3j2abcd.tmp"
    stale.write_bytes(b"\0" * 1_000_000)
    resumed = run_cli("train", "--resume", "--out", run_copy, "--epochs", "2", "--max-steps", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert not stale.exists()
    stale.write_bytes(b"\0" * 1000)
    forced = run_cli(
        "train", "--data", small_split, *FAST, "--epochs", "1", "--max-steps", "1", "--out", run_copy, "--force"
    )
    assert forced.returncode == 0, forced.stderr
    assert not stale.exists()


def test_files_honour_the_umask(small_split, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(
        "train", "--data", small_split, *FAST, "--epochs", "1", "--max-steps", "1", "--out", out,
        preexec_fn=lambda: os.umask(0o002),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for name in ("last.pt", "best.pt", "config.json", "history.csv", "manifest.csv", "run.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o664, name
    assert run_cli("plot", out, preexec_fn=lambda: os.umask(0o027)).returncode == 0
    assert stat.S_IMODE((out / "curves.png").stat().st_mode) == 0o640
    data = tmp_path / "data"
    assert run_cli("sample-data", data, "--per-class", "3", preexec_fn=lambda: os.umask(0o022)).returncode == 0
    assert run_cli("split", data, "--val", "0.34", preexec_fn=lambda: os.umask(0o022)).returncode == 0
    assert stat.S_IMODE(next(data.glob("*/*.png")).stat().st_mode) == 0o644
    assert stat.S_IMODE((data / "manifest.csv").stat().st_mode) == 0o644


def test_a_failed_start_leaves_nothing(small_split, tmp_path):
    out = tmp_path / "new" / "run"
    proc = run_cli("train", "--data", small_split, *FAST, "--epochs", "2", "--lr", "1e30", "--out", out)
    assert proc.returncode == 1, proc.stderr
    assert "nothing was kept" in one_error_line(proc) or "no checkpoint was written" in proc.stderr
    assert not out.exists()
    bad_init = tmp_path / "init.pt"
    bad_init.write_bytes(b"not a checkpoint")
    proc = run_cli("train", "--data", small_split, *FAST, "--init", bad_init, "--out", out)
    assert proc.returncode == 2 and not out.exists()


def test_default_run_folders_are_numbered_and_data_is_checked_first(small_split, tmp_path):
    shutil.copytree(small_split, tmp_path / "data")
    args = [*FAST, "--epochs", "1", "--max-steps", "1"]
    first = run_cli("train", *args, cwd=tmp_path)
    second = run_cli("train", *args, cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert first.stdout.strip() == "runs/r18" and second.stdout.strip() == "runs/r18-2"
    missing = run_cli("train", *args, "--data", "nodata", cwd=tmp_path)
    assert missing.returncode == 2 and "nodata" in one_error_line(missing) and "runs/r18" not in missing.stderr
    # --resume without --out picks the newest numbered folder.
    resumed = run_cli("train", "--resume", "--epochs", "2", "--arch", "18", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "runs/r18-2"


def test_resume_catches_swapped_images_of_the_same_size(small_split, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_split, data)
    out = tmp_path / "run"
    assert run_cli("train", "--data", data, *FAST, "--epochs", "1", "--max-steps", "2", "--out", out).returncode == 0
    rows = [line.split(",") for line in (data / "manifest.csv").read_text().splitlines()[1:]]
    by_size: dict[tuple[int, str], list[str]] = {}
    for row in rows:
        by_size.setdefault(((data / row[0]).stat().st_size, row[1]), []).append(row[0])
    pair = next(
        (a[0], b[0])
        for (size_a, label_a), a in by_size.items()
        for (size_b, label_b), b in by_size.items()
        if size_a == size_b and label_a < label_b
    )
    a, b = data / pair[0], data / pair[1]
    tmp = data / "swap.tmp"
    os.rename(a, tmp)  # rename keeps size and modification time: only the content tells
    os.rename(b, a)
    os.rename(tmp, b)
    proc = run_cli("train", "--resume", "--out", out, "--epochs", "2")
    assert proc.returncode == 2
    assert "changed content" in one_error_line(proc) and "2 image(s)" in proc.stderr


def test_resume_of_an_untouched_dataset_rehashes_nothing(small_split, tmp_path, monkeypatch):
    import resnet_cli.engine.run_dir as run_dir

    out = tmp_path / "run"
    config = TrainConfig(data=str(small_split), arch="18", epochs=1, batch_size=16, out=str(out), workers=0)
    fit(TrainConfig(**{**config.__dict__, "max_steps_per_epoch": 1}))
    hashed = []
    real = run_dir._sha256
    monkeypatch.setattr(run_dir, "_sha256", lambda p: hashed.append(p) or real(p))
    fit(TrainConfig(**{**config.__dict__, "epochs": 2, "max_steps_per_epoch": 1}), resume=True)
    assert hashed == []


def test_history_has_the_honest_train_figures(small_split, tmp_path):
    out = tmp_path / "run"
    result = fit(TrainConfig(data=str(small_split), arch="18", epochs=2, batch_size=16, out=str(out), workers=0))
    records = read_history(out)
    assert len(records) == 2
    for r in records:
        assert r.train_eval_loss is not None and 0.0 <= r.train_eval_acc <= 1.0
        assert r.train_eval_loss != pytest.approx(r.train_loss, abs=1e-9)  # measured apart from the running mean
    assert result.config["train_subset"]["images"] == 40  # as large as val


def test_train_subset_is_stratified_seeded_and_fixed(small_split):
    from resnet_cli.data.split import default_manifest_path, read_manifest

    rows = read_manifest(default_manifest_path(small_split)).part("train")
    first = train_subset(rows, 40, 7)
    assert first == train_subset(rows, 40, 7) and first != train_subset(rows, 40, 8)
    counts: dict[str, int] = {}
    for r in first:
        counts[r.label] = counts.get(r.label, 0) + 1
    assert set(counts.values()) == {4}  # 12 train images in each of 10 classes -> 4 each
    assert train_subset(rows, 1000, 7) == rows


def test_blown_up_weights_are_never_kept(small_split, tmp_path):
    from resnet_cli.engine.callbacks import Callback
    from resnet_cli.errors import RunFailedError

    out = tmp_path / "run"
    config = TrainConfig(data=str(small_split), arch="18", epochs=1, batch_size=16, out=str(out), workers=0)
    fit(config)
    good = torch.load(out / "last.pt", weights_only=True)

    class BlowUp(Callback):
        """Sends one weight to 1e8 in epoch 2, as a diverging run would; BatchNorm keeps the loss finite."""

        def on_train_start(self, info):
            self.model = info["network"]

        def on_batch_end(self, epoch, stats):
            if epoch == 2 and stats.step == 3:
                with torch.no_grad():
                    self.model.layer1[0].conv1.weight[0, 0, 0, 0] = 1e8

    with pytest.raises(RunFailedError, match=r"blew up .* last.pt keeps the last sane state, from the end of epoch 1"):
        fit(TrainConfig(**{**config.__dict__, "epochs": 3}), resume=True, callbacks=[BlowUp()])
    kept = torch.load(out / "last.pt", weights_only=True)
    assert kept["epoch"] == 1
    assert all(torch.equal(kept["model"][k], good["model"][k]) for k in good["model"])


def test_best_checkpoint_holds_weights_and_metadata_only(finished_run):
    best = torch.load(finished_run / "best.pt", weights_only=True)
    last = torch.load(finished_run / "last.pt", weights_only=True)
    assert "optimizer" not in best and "rng" not in best and "loader" not in best
    assert "optimizer" in last and "loader" in last
    assert (finished_run / "best.pt").stat().st_size < 0.6 * (finished_run / "last.pt").stat().st_size


def test_json_keeps_progress_on_stderr_and_quiet_silences_it(small_split, tmp_path):
    args = ["train", "--data", small_split, *FAST, "--epochs", "1", "--max-steps", "1"]
    loud = run_cli(*args, "--json", "--out", tmp_path / "a", real_process=True)
    assert loud.returncode == 0 and json.loads(loud.stdout)["epochs_run"] == 1
    assert "epoch 1/1" in loud.stderr
    quiet = run_cli(*args, "--quiet", "--out", tmp_path / "b", real_process=True)
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout.strip() == str(tmp_path / "b")


def test_fit_progress_prints_plain_lines(small_split, tmp_path, capsys):
    fit(
        TrainConfig(data=str(small_split), arch="18", epochs=1, batch_size=16, out=str(tmp_path / "r"), workers=0),
        progress=True,
    )
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "* = best val loss so far" in err


def test_sigterm_during_a_fresh_run_keeps_its_checkpoint(small_split, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "resnet_cli", "train", "--data", str(small_split), *FAST, "--epochs", "3",
         "--save-every", "1", "--out", str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert (out / "last.pt").exists() and (out / "config.json").exists()


def test_out_of_memory_gives_advice_and_leaves_a_coherent_folder(small_split, tmp_path):
    import resource

    def limit_memory():  # address space: what torch maps at import, plus far less than the batch needs
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    out = tmp_path / "run"
    proc = run_cli(
        "train", "--data", small_split, "--arch", "18", "--workers", "0", "--batch-size", "160",
        "--image-size", "384", "--no-small-input", "--epochs", "1", "--out", out, preexec_fn=limit_memory,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc)
    assert "out of memory" in line and "--batch-size 160" in line and "--batch-size 80" in line
    assert not out.exists()  # nothing half-made: the same command with a smaller batch starts cleanly


@pytest.mark.parametrize(
    "failure",
    [
        MemoryError(),  # what torch raises when a C++ allocation (std::bad_alloc) fails, as in some CPU kernels
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    ],
)
def test_every_kind_of_allocation_failure_becomes_the_batch_size_advice(failure):
    from resnet_cli.engine.loop import OutOfMemory, as_out_of_memory

    translated = as_out_of_memory(failure, 3, 7)
    assert isinstance(translated, OutOfMemory) and (translated.epoch, translated.step) == (3, 7)
    other = RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    assert as_out_of_memory(other, 3, 7) is other  # a real bug keeps its own message


def test_python_callers_are_told_argument_names_not_flags(small_split, tmp_path):
    from resnet_cli.errors import OutputExistsError

    out = tmp_path / "run"
    config = TrainConfig(
        data=str(small_split), arch="18", epochs=1, batch_size=16, out=str(out), workers=0, max_steps_per_epoch=1
    )
    fit(config)
    with pytest.raises(OutputExistsError) as caught:
        fit(config)
    assert "resume=True" in str(caught.value) and "force=True" in str(caught.value) and "--" not in str(caught.value)
    cli = run_cli("train", "--data", small_split, *FAST, "--epochs", "1", "--out", out)
    assert "--resume" in cli.stderr and "--force" in cli.stderr  # the command line still speaks flags

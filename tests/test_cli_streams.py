"""The CLI's output streams and error boundary: closed pipes, --quiet, LANG=C, help, completion, out of memory,
and the progress display."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import typer

from resnet_cli.cli import console
from resnet_cli.cli.app import _Group
from tests.conftest import ROOT, run_cli
from tests.images import make_folder

ASCII_ENV = {"LANG": "C", "LC_ALL": "C", "PYTHONIOENCODING": "ascii"}


def _env(extra: dict | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(extra or {})}
    env.pop("RESNET_DEBUG", None)
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "resnet_cli", *map(str, args)]


@pytest.fixture(scope="module")
def cafe(tmp_path_factory):
    """Classes "café" and "plain" (9 tiny PNGs each, split 3/3/3) and a 1-epoch resnet18 run trained on them."""
    from resnet_cli.config import SplitConfig, TrainConfig
    from resnet_cli.data.split import make_split
    from resnet_cli.engine.train import fit

    base = tmp_path_factory.mktemp("cafe")
    data = make_folder(base / "data", {"café": 9, "plain": 9}, size=32)
    make_split(data, SplitConfig(val=0.34, test=0.34, seed=0))
    run = base / "runs" / "r18"
    fit(TrainConfig(data=str(data), arch="18", epochs=1, max_steps_per_epoch=2, batch_size=4, out=str(run), workers=0))
    return data, run


# -- 1. a closed pipe ends the command silently, as SIGPIPE ends a Unix tool ------------------------------------


def _run_into_closed_pipe(args) -> subprocess.CompletedProcess:
    """Run with stdout a pipe whose reader is already gone: the first write fails, deterministically."""
    read, write = os.pipe()
    proc = subprocess.Popen(_cli(*args), stdout=write, stderr=subprocess.PIPE, env=_env(), text=True)
    os.close(write)
    os.close(read)
    _, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


@pytest.mark.parametrize(
    "args", [("summary", "--arch", "18"), ("summary", "--arch", "18", "--json"), ("--help",), ("eval", "--help")]
)
def test_writing_to_a_closed_pipe_dies_by_sigpipe_without_a_message(args):
    proc = _run_into_closed_pipe(args)
    assert proc.returncode == -signal.SIGPIPE, proc.stderr
    assert proc.stderr == ""


def test_reader_closing_after_one_line_never_gives_an_error():
    # `resnet summary --arch 18 --depth 3 | head -1`, several times: whether the reader leaves before or after
    # the last write is a race; either way no message, and 0 or SIGPIPE (141 in the shell), never 1.
    for _ in range(3):
        proc = subprocess.Popen(
            _cli("summary", "--arch", "18", "--depth", "3"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env()
        )
        assert proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read()
        proc.wait(timeout=300)
        assert proc.returncode in (0, -signal.SIGPIPE), err
        assert err == b""


def test_shell_pipeline_into_head_reports_141(cafe):
    data, run = cafe
    command = " ".join(map(str, _cli("predict", run, data / "café", data / "plain", "--csv")))
    for _ in range(2):
        proc = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {command} | head -1"], capture_output=True, text=True, env=_env()
        )
        assert proc.returncode in (0, 141), proc.stderr
        assert proc.stdout.startswith("path,class_1")
        assert "error" not in proc.stderr
    closed = _run_into_closed_pipe(("predict", run, data / "café", "--csv"))
    assert closed.returncode == -signal.SIGPIPE and closed.stderr == ""


# -- 2. --quiet: errors and warnings only -------------------------------------------------------------------------


def test_quiet_leaves_stderr_empty_and_stdout_the_result(tmp_path, cafe):
    _, run = cafe
    data = tmp_path / "digits"
    made = run_cli("sample-data", data, "--per-class", "10", "--quiet")
    assert made.returncode == 0 and made.stderr == ""
    split = run_cli("split", data, "--val", "0.2", "--quiet")
    assert split.returncode == 0, split.stderr
    assert split.stderr == ""  # the class x split table went to stderr outside a terminal before
    assert split.stdout.strip().endswith("manifest.csv")

    table = run_cli("eval", run, "--split", "val", "--quiet")
    assert table.returncode == 0 and table.stderr == ""  # the table went to stderr outside a terminal before
    assert table.stdout == f"{run / 'eval-val.json'}\n"
    evaluated = run_cli("eval", run, "--split", "val", "--no-save", "--quiet", "--json")
    assert evaluated.returncode == 0 and evaluated.stderr == ""
    assert json.loads(evaluated.stdout)["split"] == "val"
    loud = run_cli("eval", run, "--split", "val", "--no-save")
    assert "per class" in loud.stderr  # without --quiet, outside a terminal, the table is information on stderr


def test_quiet_state_governs_report_console_and_info_lines(monkeypatch, capsys):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    try:
        console.set_quiet(True)
        console.info_line("information")
        console.warning_line("a warning")
        console.report_console().print("table outside a terminal")
        terminal = Terminal()
        monkeypatch.setattr(sys, "stdout", terminal)
        console.report_console().print("table in a terminal")  # the result: --quiet does not hide it
    finally:
        console.set_quiet(False)
    assert "table in a terminal" in terminal.getvalue()
    assert capsys.readouterr().err == "warning: a warning\n"


# -- 3. LANG=C, PYTHONIOENCODING=ascii ------------------------------------------------------------------------------


def test_output_works_under_an_ascii_locale(cafe):
    data, run = cafe

    def ascii_run(*args):
        proc = subprocess.run(_cli(*args), capture_output=True, text=True, env=_env(ASCII_ENV), encoding="utf-8")
        assert "UnicodeEncodeError" not in proc.stderr
        return proc

    doc = ascii_run("eval", run, "--split", "val", "--no-save", "--json")
    assert doc.returncode == 0, doc.stderr
    assert doc.stdout.isascii() and "café" in json.loads(doc.stdout)["classes"]
    table = ascii_run("eval", run, "--split", "test")
    assert table.returncode == 0, table.stderr
    assert "caf\\xe9" in table.stderr  # the table, outside a terminal, on stderr
    for flags in ([], ["--csv"], ["--json"]):
        proc = ascii_run("predict", run, data / "café", *flags)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.isascii()
        if flags == ["--json"]:
            paths = [p["path"] for p in json.loads(proc.stdout)["predictions"]]
            assert len(paths) == 9 and all("café" in p for p in paths)
        else:
            assert "caf\\xe9" in proc.stdout
    split = ascii_run(
        "split", data, "--val", "0.34", "--test", "0.34", "--seed", "0", "--json", "--out", data / "m2.csv"
    )
    assert split.returncode == 0, split.stderr
    assert "café" in json.loads(split.stdout)["classes"]


# -- 4. help ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [(), ("eval",), ("train",), ("split",), ("predict",)])
def test_help_shows_no_value_type_for_flags(command):
    proc = run_cli(*command, "--help")
    assert proc.returncode == 0
    assert "<bool>" not in proc.stdout
    assert "--help" in proc.stdout


def test_flag_given_a_value_is_one_line_naming_the_command():
    proc = run_cli("eval", "run", "--force=yes")
    assert proc.returncode == 2
    assert proc.stderr == "error: Option '--force' does not take a value. (see 'resnet eval --help')\n"


def test_eval_examples_are_one_per_line():
    text = run_cli("eval", "--help").stdout
    lines = [line for line in text.splitlines() if "resnet eval runs/r34" in line]
    assert len(lines) >= 3
    assert all(line.count("resnet eval") == 1 for line in lines)
    assert " | " not in text


# -- 5. shell completion ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "words, expected",
    [
        ("resnet train --arch 1", ["18", "101", "152"]),
        ("resnet eval runs/r18 --precision ", ["auto", "fp32", "bf16", "fp16"]),
        ("resnet eval runs/r18 --split ", ["test", "val", "train"]),
        ("resnet eval runs/r18 --split v", ["val"]),
    ],
)
def test_bash_completion_offers_the_values(words, expected):
    env = _env({"_RESNET_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1)})
    proc = subprocess.run(_cli(), capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == expected


# -- 10. out of memory ----------------------------------------------------------------------------------------------


def _boundary_app(body) -> typer.Typer:
    """A one-command app behind the real error boundary."""
    app = typer.Typer(cls=_Group, pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        pass

    @app.command()
    def work() -> None:
        body()

    return app


def _allocate_too_much() -> None:
    import torch

    torch.empty(1 << 60, dtype=torch.uint8)  # an exabyte: the CPU allocator refuses


def _accelerator_out_of_memory() -> None:
    import torch

    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


@pytest.mark.parametrize(
    "body, what", [(_allocate_too_much, "out of memory:"), (_accelerator_out_of_memory, "out of GPU memory:")]
)
def test_out_of_memory_is_one_line_of_advice_exit_1(body, what):
    from typer.testing import CliRunner

    result = CliRunner().invoke(_boundary_app(body), ["work"], env={"RESNET_DEBUG": None})
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {what}") and "--batch-size" in lines[0]


# -- 6. progress --------------------------------------------------------------------------------------------------


def test_plain_progress_has_totals_eta_and_explains_the_mark(cafe, tmp_path, capsys):
    from resnet_cli.cli.progress import LEGEND, PlainTraining
    from resnet_cli.config import TrainConfig
    from resnet_cli.engine.train import fit

    data, _ = cafe
    out = tmp_path / "run"
    config = TrainConfig(
        data=str(data), arch="18", epochs=2, max_steps_per_epoch=2, batch_size=4, out=str(out), workers=0
    )
    capsys.readouterr()
    fit(config, callbacks=[PlainTraining()])
    lines = capsys.readouterr().err.splitlines()
    assert lines.count(LEGEND) == 1 and "*" in LEGEND and "best.pt" in LEGEND
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2  # one line per epoch: no step lines for short epochs
    assert epochs[0].startswith("epoch 1/2 ") and "ETA " in epochs[0]
    assert epochs[1].startswith("epoch 2/2 ") and "ETA" not in epochs[1]
    assert epochs[0].endswith("  *")  # the first epoch is always the best so far


def test_plain_progress_within_long_epochs_is_throttled(capsys):
    from resnet_cli.cli.progress import PlainTraining
    from resnet_cli.engine.callbacks import BatchStats

    progress = PlainTraining(interval=0.05)
    progress.on_epoch_start(3, 30, 1000)
    for step in range(1, 1000):
        progress.on_batch_end(3, BatchStats(step, 1000, 1.0, 0.5, 100.0))
    time.sleep(0.06)
    progress.on_batch_end(3, BatchStats(1000, 1000, 1.0, 0.5, 100.0))  # the epoch line follows: no step line
    progress.on_validation_start(3, 50)
    time.sleep(0.06)
    progress.on_validation_step(10, 50)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) <= 3
    assert lines[-1] == "epoch 3/30 validating 10/50"


def test_terminal_bar_shows_validation_progress_not_training_figures():
    from resnet_cli.cli.progress import RichTraining
    from resnet_cli.engine.callbacks import BatchStats

    bar = RichTraining()
    bar.on_epoch_start(2, 5, 10)
    bar.on_batch_end(2, BatchStats(10, 10, 0.1234, 0.9, 50.0))
    assert "loss 0.1234" in bar.progress.tasks[0].fields["stats"]
    bar.on_validation_start(2, 4)
    bar.on_validation_step(1, 4)
    task = bar.progress.tasks[0]
    assert "validating" in task.description and "2/5" in task.description
    assert task.fields["stats"] == "" and task.total == 4 and task.completed == 1
    bar.close()

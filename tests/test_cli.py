"""The command line through Typer's CliRunner: help, version, summary, the error boundary."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from resnet_cli import __version__
from resnet_cli.cli.app import app

runner = CliRunner()


def invoke(*args: str, env: dict | None = None):
    return runner.invoke(app, list(args), env=env)


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert __version__ in result.stdout


def test_help_lists_commands_and_examples():
    result = invoke("--help")
    assert result.exit_code == 0
    assert "summary" in result.stdout
    for name in app.registered_commands:
        cmd = name.name or name.callback.__name__.replace("_", "-")
        sub = invoke(cmd, "--help")
        assert sub.exit_code == 0, cmd
        assert "resnet " in sub.stdout and "Example" in sub.stdout, cmd


def test_summary_table():
    result = invoke("summary", "--arch", "34", "--depth", "1")
    assert result.exit_code == 0, result.stderr
    assert "layer4" in result.stdout and "21,797,672" in result.stdout
    assert "3.664 G" in result.stdout


def test_summary_json_is_one_document():
    result = invoke("summary", "--arch", "resnet50", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["total_params"] == 25_557_032
    assert abs(doc["total_macs"] / 1e9 - 4.09) < 0.04
    assert doc["model"]["arch"] == "resnet50"
    assert any(layer["name"] == "layer2.0" for layer in doc["layers"])


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--arch", "35"], "18, 34, 50, 101, 152"),
        (["--image-size", "0"], "at least 32"),
        (["--image-size", "16", "--no-small-input"], "--small-input"),
        (["--num-classes", "-4"], "at least 1"),
        (["--depth", "0"], "depth must be"),
        (["--depth", "9"], "depth must be"),
        (["--image-size", "abc"], "--image-size"),
    ],
)
def test_summary_bad_input_is_one_line_exit_2(args, fragment):
    result = invoke("summary", *args)
    assert result.exit_code == 2
    assert fragment in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_debug_shows_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "resnet_cli", "summary", "--arch", "35"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "RESNET_DEBUG": "1"},
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_module_entry_point_and_unknown_command():
    proc = subprocess.run([sys.executable, "-m", "resnet_cli", "sumary"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "summary" in proc.stderr  # suggests the right name


def test_eval_and_split_refuse_a_negative_worker_count_in_one_line(small_split, tmp_path):
    # One --workers policy: before it, eval handed -1 to the DataLoader and split quietly ran with one process.
    for args in (
        ["eval", str(tmp_path / "run"), "--workers", "-1"],
        ["split", str(small_split), "--out", str(tmp_path / "m.csv"), "--workers", "-1"],
    ):
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.stderr)
        assert result.stderr.startswith("error: --workers") and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "m.csv").exists()


def test_split_takes_the_shared_workers_option_and_every_count_gives_one_manifest(small_split, tmp_path):
    # The automatic choice (whatever this machine's CPUs give) and an explicit count split identically.
    manifests = []
    for name, extra in (("auto.csv", []), ("serial.csv", ["--workers", "0"]), ("pool.csv", ["-j", "2"])):
        result = invoke("split", str(small_split), "--val", "0.2", "--out", str(tmp_path / name), "-q", *extra)
        assert result.exit_code == 0, result.stderr
        manifests.append((tmp_path / name).read_text())
    assert manifests[0] == manifests[1] == manifests[2]

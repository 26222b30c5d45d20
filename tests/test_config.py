"""Options declared once: TrainConfig's fields give ``resnet train`` its defaults and help; ``--config FILE``
(TOML, or a run's config.json) under the flags; one ``--workers`` policy."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import typer

from resnet_cli.cli.app import app
from resnet_cli.cli.train import to_field
from resnet_cli.config import WORKERS_HELP, TrainConfig, read_train_options, resolve_workers
from resnet_cli.errors import ConfigError
from tests.conftest import run_cli

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# `train` options that steer the command rather than describe the run, so TrainConfig has no field for them.
CLI_ONLY = {
    "config_file": "--config reads options from a file; it is not one itself",
    "split": "hidden old name of --manifest, warned about until 0.3",
    "resume": "how to start, not what the run is",
    "force": "what may be overwritten, not what the run is",
    "json_out": "stdout format",
    "quiet": "stderr verbosity",
}
# TrainConfig fields with no `train` option, each with its reason (none today).
FIELDS_WITHOUT_OPTION: dict[str, str] = {}


def command_params(name: str) -> dict:
    command = typer.main.get_command(app).commands[name]
    return {p.name: p for p in command.params}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def train_options(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())["train"]


def one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


# --- declared once ---------------------------------------------------------------------------------------------


def test_every_train_option_takes_its_default_and_help_from_its_field():
    params = command_params("train")
    checked = 0
    for name, param in params.items():
        if name in CLI_ONLY or param.param_type_name != "option":
            continue
        assert name in FIELDS, f"--{name} is neither a TrainConfig field nor listed in CLI_ONLY"
        spec = FIELDS[name]
        assert param.help == spec.metadata["help"], name
        assert to_field(name, param.default) == spec.default, name
        flag = spec.metadata.get("flag", "--" + name.replace("_", "-")).split("/")[0]
        assert param.opts[0] == flag, name
        if "short" in spec.metadata:
            assert spec.metadata["short"] in param.opts, name
        checked += 1
    assert checked == len(FIELDS) - len(FIELDS_WITHOUT_OPTION)


def test_every_train_config_field_has_a_train_option_or_a_reason():
    params = command_params("train")
    missing = set(FIELDS) - set(params) - set(FIELDS_WITHOUT_OPTION)
    assert not missing, f"TrainConfig fields with no `resnet train` option: {sorted(missing)}"
    assert all(reason for reason in FIELDS_WITHOUT_OPTION.values())
    assert all("help" in spec.metadata for spec in FIELDS.values())


def test_help_shows_the_fields_defaults():
    result = run_cli("train", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "[default: 30]" in text and "[default: resnet34]" in text and "--max-steps" in text and "--config" in text


# --- one --workers policy --------------------------------------------------------------------------------------


def test_workers_is_one_option_with_one_policy_on_train_eval_and_split():
    for command in ("train", "eval", "split"):
        param = command_params(command)["workers"]
        assert param.opts == ["--workers", "-j"] and param.default is None, command
        assert param.help == WORKERS_HELP, command
    assert FIELDS["workers"].metadata["help"] == WORKERS_HELP


@pytest.mark.parametrize(("cpus", "expected"), [(1, 0), (2, 0), (3, 2), (5, 4), (64, 4)])
def test_automatic_workers_leave_a_cpu_to_the_main_process_and_stop_at_four(cpus, expected):
    assert resolve_workers(None, cpus=cpus) == expected


def test_a_requested_worker_count_is_kept_and_a_negative_one_refused():
    assert resolve_workers(0, cpus=64) == 0
    assert resolve_workers(7, cpus=2) == 7
    with pytest.raises(ConfigError, match="image verification") as caught:
        resolve_workers(-1, "image verification")
    assert caught.value.exit_code == 2


# --- --config FILE ---------------------------------------------------------------------------------------------


def test_toml_keys_take_field_flag_and_dashed_names_and_the_fields_types(tmp_path):
    path = write(
        tmp_path / "opts.toml",
        'arch = "18"\nbatch-size = 16\nmax-steps = 2\nlr = 1\ngpus = [0, 1]\nhflip = true\nmanifest = "m.csv"\n',
    )
    options = read_train_options(path)
    assert options == {
        "arch": "18",
        "batch_size": 16,
        "max_steps_per_epoch": 2,
        "lr": 1.0,
        "gpus": (0, 1),
        "hflip": True,
        "manifest": "m.csv",
    }
    assert isinstance(options["lr"], float)
    TrainConfig(**options)  # every key is a field


def test_config_file_sets_options_and_flags_given_override_it(small_split, tmp_path):
    config = write(
        tmp_path / "train.toml",
        'arch = "18"\nbatch-size = 16\nepochs = 3\nlr = 0.002\nmax-steps = 1\nworkers = 0\npatience = 2\nseed = 7\n',
    )
    out = tmp_path / "r1"
    # --patience 8 is the default, given on purpose: a flag on the command line wins even at its default value.
    result = run_cli(
        "train", "--config", config, "--data", small_split, "--epochs", "1", "--patience", "8", "--out", out, "-q"
    )
    assert result.returncode == 0, result.stderr
    train = train_options(out)
    assert train["arch"] == "resnet18" and train["batch_size"] == 16 and train["lr"] == 0.002
    assert train["max_steps_per_epoch"] == 1 and train["seed"] == 7
    assert train["epochs"] == 1 and train["patience"] == 8  # the flags, over the file
    assert train["weight_decay"] == 0.05  # neither: the family default (AdamW for a ResNet)
    assert len((out / "history.csv").read_text().splitlines()) == 2


def test_a_runs_config_json_repeats_the_run(small_split, tmp_path):
    first, again = tmp_path / "r1", tmp_path / "r1-again"
    args = ("--data", small_split, "--arch", "18", "--batch-size", "16", "--epochs", "1", "--max-steps", "1")
    result = run_cli("train", *args, "--lr", "0.003", "--seed", "5", "--workers", "0", "--out", first, "-q")
    assert result.returncode == 0, result.stderr
    result = run_cli("train", "--config", first / "config.json", "--out", again, "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(str(again))
    before, after = train_options(first), train_options(again)
    assert before.pop("out") == str(first) and after.pop("out") == str(again)
    assert after == before  # the resolved automatic values (image size, channels, augment, precision) included
    assert after["image_size"] == 8 and after["in_channels"] == 1 and after["lr"] == 0.003
    weights = [torch.load(run / "last.pt", map_location="cpu", weights_only=True)["model"] for run in (first, again)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_unknown_keys_are_exit_2_naming_each_and_nothing_is_written(small_split, tmp_path):
    config = write(tmp_path / "typo.toml", 'arch = "18"\nbatch_sise = 16\ncolour = "red"\n')
    out = tmp_path / "r"
    line = one_error_line(run_cli("train", "--config", config, "--data", small_split, "--out", out))
    assert "batch_sise" in line and "colour" in line and str(config) in line
    assert not out.exists()


def test_unknown_key_in_a_runs_config_json_is_exit_2(tmp_path):
    config = write(tmp_path / "config.json", json.dumps({"train": {"arch": "resnet18", "frobnicate": 1}}))
    assert "frobnicate" in one_error_line(run_cli("train", "--config", config))


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('epochs = "ten"', ("epochs", "an integer")),
        ("lr = true", ("lr", "a number")),
        ('gpus = "0,1"', ("gpus", "a list of integers")),
        ("image_size = 3.5", ("image_size", "an integer", "automatically")),
        ("hflip = 1", ("hflip", "true or false")),
    ],
)
def test_a_value_of_the_wrong_type_is_exit_2_naming_key_and_type(tmp_path, text, fragments):
    config = write(tmp_path / "bad.toml", text + "\n")
    line = one_error_line(run_cli("train", "--config", config))
    assert all(f in line for f in fragments), line


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("broken.toml", "epochs = \n", "not valid TOML"),
        ("broken.json", "{", "not valid JSON"),
        ("twice.toml", "batch_size = 8\nbatch-size = 16\n", "twice"),
    ],
)
def test_unreadable_config_files_are_exit_2(tmp_path, name, text, fragment):
    line = one_error_line(run_cli("train", "--config", write(tmp_path / name, text)))
    assert fragment in line and name in line


def test_a_missing_config_file_is_exit_2(tmp_path):
    line = one_error_line(run_cli("train", "--config", tmp_path / "nope.toml"))
    assert "nope.toml" in line and "not found" in line

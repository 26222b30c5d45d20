"""``resnet study``: the grid of ordinary runs, resumed after SIGKILL, the report against a recomputation from the
run folders, nested stratified fractions, ``--print-commands`` lines that run as they are, and bad plans."""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from scipy import stats

from resnet_cli.data.split import read_manifest
from resnet_cli.engine.train import nested_fraction
from tests.conftest import ROOT, run_cli

TINY = ["--epochs", "1", "--max-steps", "2", "--batch-size", "16", "--workers", "0", "--precision", "fp32",
        "--no-channels-last"]  # fmt: skip


def study_cmd(study: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "resnet_cli", "study", str(study), "--data", str(data), "--arch", "18",
            "--arch", "vit-ti/4:lr=2e-3", *extra, *TINY]  # fmt: skip


def test_fractions_are_nested_and_stratified(small_split):
    rows = read_manifest(small_split / "manifest.csv").part("train")
    per_class = Counter(r.label for r in rows)
    for seed in (0, 1):
        small, large = nested_fraction(rows, 0.25, seed), nested_fraction(rows, 0.5, seed)
        assert {r.path for r in small} < {r.path for r in large}  # nested
        for subset, fraction in ((small, 0.25), (large, 0.5)):
            counts = Counter(r.label for r in subset)
            assert counts == {label: max(1, round(fraction * n)) for label, n in per_class.items()}  # stratified
    assert {r.path for r in nested_fraction(rows, 0.25, 0)} != {r.path for r in nested_fraction(rows, 0.25, 1)}
    assert nested_fraction(rows, 1.0, 3) == rows


def _finished(study: Path) -> int:
    return len(list((study / "runs").glob("*/run.json")))


@pytest.mark.slow
def test_a_study_survives_sigkill_and_its_report_equals_a_recomputation(small_split, tmp_path):
    study = tmp_path / "study"
    proc = subprocess.Popen(
        study_cmd(study, small_split, "--seeds", "2", "--fractions", "0.5,1"),
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while _finished(study) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()
    plan = json.loads((study / "study.json").read_text())
    assert [a["arch"] for a in plan["archs"]] == ["resnet18", "vit_ti_4"] and plan["seeds"] == [0, 1]
    assert plan["archs"][1]["overrides"] == [["lr", "2e-3"]] and plan["fractions"] == [0.5, 1.0]
    os.killpg(proc.pid, signal.SIGKILL)  # the study and its training, as a crash would
    proc.wait()
    assert 3 <= _finished(study) < 8

    partial = run_cli("study", "report", study, "--json")
    assert partial.returncode == 0, partial.stderr
    assert json.loads(partial.stdout)["missing"]
    table = run_cli("study", "report", study)  # not a terminal: the table is on stderr, the report's path on stdout
    assert "not finished" in table.stderr and table.stdout.splitlines()[-1] == str(study / "report.md")

    rerun = run_cli("study", study, "--data", small_split, "--arch", "18", "--arch", "vit-ti/4:lr=2e-3", "--seeds", "2",
                    "--fractions", "0.5,1", *TINY, "--json", real_process=True)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert "done already" in rerun.stderr
    report = json.loads(rerun.stdout)
    assert not report["missing"] and len(report["runs"]) == 8

    # Every run is an ordinary run folder: its own config says what the grid asked for.
    for run in report["runs"]:
        config = json.loads((study / "runs" / run["name"] / "config.json").read_text())["train"]
        assert (config["seed"], config["train_fraction"]) == (run["seed"], run["fraction"])
        assert config["lr"] == (2e-3 if run["arch"] == "vit_ti_4" else 1e-3)  # the recorded override
        assert config["epochs"] == 1 and config["max_steps_per_epoch"] == 2
    # The report equals a recomputation from the run folders.
    top1: dict[tuple[str, float], dict[int, float]] = {}
    for folder in sorted((study / "runs").iterdir()):
        config = json.loads((folder / "config.json").read_text())
        label = "r18" if config["model"]["arch"] == "resnet18" else "vit-ti4-lr2e-3"
        accuracy = json.loads((folder / "eval-test.json").read_text())["top1"]
        top1.setdefault((label, config["train"]["train_fraction"]), {})[config["train"]["seed"]] = accuracy
    for group in report["groups"]:
        values = list(top1[(group["label"], group["fraction"])].values())
        stat = group["stats"]["test_top1"]
        assert stat["n"] == 2 and stat["mean"] == pytest.approx(statistics.mean(values), abs=1e-12)
        assert stat["std"] == pytest.approx(statistics.stdev(values), abs=1e-12)
        assert stat["ci95"] == pytest.approx(stats.t.ppf(0.975, 1) * statistics.stdev(values) / math.sqrt(2))
    for comparison in report["comparisons"]:
        if comparison["metric"] != "test_top1":
            continue
        ours, ref = top1[("vit-ti4-lr2e-3", comparison["fraction"])], top1[("r18", comparison["fraction"])]
        diffs = [ours[s] - ref[s] for s in (0, 1)]
        assert comparison["mean_diff"] == pytest.approx(statistics.mean(diffs), abs=1e-12)
        assert comparison["seeds"] == [0, 1]
    assert {"report.md", "runs.csv", "report.json"} <= {p.name for p in study.iterdir()}
    assert len((study / "runs.csv").read_text().splitlines()) == 9

    # eval and plot work on a study's run, and plot draws the study.
    drawn = run_cli("plot", study)
    assert drawn.returncode == 0, drawn.stderr
    assert {"study-accuracy.png", "study-gap.png", "study-curves-f0.5.png", "study-reliability-f1.png"} <= {
        Path(line).name for line in drawn.stdout.split()
    }


@pytest.mark.slow
def test_printed_commands_run_as_they_are_and_aggregate(small_split, tmp_path):
    study = tmp_path / "study"
    args = ["study", study, "--data", small_split, "--arch", "18", "--arch", "vit-ti/4", "--seeds", "1", "--fractions",
            "0.5", *TINY]  # fmt: skip
    printed = run_cli(*args, "--print-commands")
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("resnet train ") and " && resnet eval " in line for line in lines)
    assert not (study / "runs").exists()  # printing trains nothing
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    for line in lines:
        done = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    report = run_cli("study", "report", study, "--json")
    assert report.returncode == 0, report.stderr
    doc = json.loads(report.stdout)
    assert len(doc["runs"]) == 2 and not doc["missing"]
    assert run_cli(*args, "--print-commands").stdout == ""  # nothing pending any more
    finished = run_cli(*args)  # everything done: it reports, and its last line on stdout is the study for $(...)
    assert finished.returncode == 0 and "done already" in finished.stderr
    assert finished.stdout.splitlines()[-1] == str(study)


def test_plan_changes_are_refused_but_more_seeds_are_added(small_split, tmp_path):
    study = tmp_path / "study"
    base = ["study", study, "--data", small_split, "--arch", "18", "--seeds", "1", "--print-commands"]
    assert run_cli(*base, "--epochs", "1").returncode == 0
    changed = run_cli(*base, "--epochs", "2")
    assert changed.returncode == 2
    assert "plans another study" in changed.stderr and "--epochs 2" in changed.stderr
    more = run_cli("study", study, "--data", small_split, "--arch", "18", "--arch", "vit-ti/4", "--seeds", "2",
                   "--fractions", "0.5,1", "--print-commands", "--epochs", "1")  # fmt: skip
    assert more.returncode == 0, more.stderr
    plan = json.loads((study / "study.json").read_text())
    assert plan["seeds"] == [0, 1] and plan["fractions"] == [0.5, 1.0] and len(plan["archs"]) == 2
    assert len(more.stdout.splitlines()) == 8
    # A rerun that leaves out --seeds and --fractions keeps the study's, instead of growing the grid.
    again = run_cli("study", study, "--data", small_split, "--arch", "18", "--arch", "vit-ti/4", "--print-commands",
                    "--epochs", "1")  # fmt: skip
    assert again.returncode == 0 and len(again.stdout.splitlines()) == 8
    assert json.loads((study / "study.json").read_text())["seeds"] == [0, 1]


def test_printed_lines_follow_each_runs_state(small_split, tmp_path):
    study = tmp_path / "study"
    args = ["study", study, "--data", small_split, "--arch", "18", "--seeds", "4", "--print-commands", "--epochs", "1"]
    assert run_cli(*args).returncode == 0
    runs = study / "runs"
    (runs / "r18-f1-s1").mkdir(parents=True)
    (runs / "r18-f1-s1" / "last.pt").write_bytes(b"")  # interrupted: resume it
    (runs / "r18-f1-s2").mkdir()
    (runs / "r18-f1-s2" / "config.json").write_text("{}")  # killed before its first checkpoint: start over
    (runs / "r18-f1-s3").mkdir()
    (runs / "r18-f1-s3" / "run.json").write_text("{}")  # trained, not evaluated: evaluate only
    lines = run_cli(*args).stdout.splitlines()
    assert lines[0].startswith("resnet train --data") and "--seed 0" in lines[0] and "--force" not in lines[0]
    assert lines[1].startswith(f"resnet train --resume --out {runs / 'r18-f1-s1'} --quiet && resnet eval")
    assert "--seed 2" in lines[2] and "--force --quiet && resnet eval" in lines[2]
    assert lines[3] == f"resnet eval {runs / 'r18-f1-s3'} --split test --quiet"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--arch", "18", "--seed", "3"], "the study sets --seed per run"),
        (["--arch", "18", "--out", "x"], "the study names each run folder"),
        (["--arch", "18", "--resume"], "resumes interrupted runs itself"),
        (["--arch", "18", "--bogus", "1"], "No such option: --bogus"),
        (["--arch", "18", "--lr", "-1"], "--lr must be a positive number"),
        (["--arch", "18:out=x"], "not a training option an architecture may override"),
        (["--arch", "18:lr"], "write overrides as key=value"),
        (["--arch", "19"], "unknown architecture '19'"),
        (["--arch", "18", "--seeds", "0"], "one seed alone: 5,"),
        (["--arch", "18", "--fractions", "0,1"], "--fractions takes numbers in (0, 1]"),
        ([], "give at least one --arch"),
    ],
)
def test_bad_study_options_exit_2_before_anything(small_split, tmp_path, args, fragment):
    study = tmp_path / "study"
    proc = run_cli("study", study, "--data", small_split, *args)
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr and "Traceback" not in proc.stderr
    assert not study.exists()


def test_a_comparison_over_one_seed_states_no_interval():
    from resnet_cli.engine.study_report import Comparison, paired

    mean, ci95, p = paired([0.9], [0.8])
    assert mean == pytest.approx(0.1) and ci95 is None and p is None
    one = Comparison("test_top1", 0.5, "vit-ti2", "r18", [0], mean, ci95, p).sentence()
    assert "+10.00 points (one paired seed: no confidence interval)" in one and "95% CI" not in one
    mean, ci95, p = paired([0.9, 0.7], [0.8, 0.75])
    two = Comparison("test_top1", 0.5, "vit-ti2", "r18", [0, 1], mean, ci95, p).sentence()
    assert f"± {ci95 * 100:.2f} points (95% CI, paired t over 2 seeds, p = " in two

"""The report of a study: one record per run, statistics per (architecture, fraction), paired comparisons.

Everything is read back from the run folders (``config.json``, ``run.json``, ``history.csv``, ``eval-<split>.json``),
so the report of a study equals a recomputation from its runs, and covers whatever has finished.

Statistics over seeds: mean, sample standard deviation (n - 1) and the 95% confidence interval of the mean
from Student's t (``scipy.stats.t``). Comparisons between architectures are paired by seed (the same seed means
the same train subset, order and augmentation draws) and use the paired t-test (``scipy.stats.ttest_rel``):
the mean difference with its 95% confidence interval and p-value.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from resnet_cli.config import ModelConfig
from resnet_cli.engine.study import StudyPlan, read_plan, run_status
from resnet_cli.errors import ConfigError
from resnet_cli.fs import atomic_write_text
from resnet_cli.io.history import read_history

#: The per-run figures aggregated, with their labels (what each number means is in README's study section).
METRICS: dict[str, str] = {
    "test_top1": "top-1 accuracy",
    "test_balanced": "balanced accuracy",
    "test_nll": "NLL",
    "test_ece": "ECE",
    "gap_acc_best": "acc gap (train - val) at best epoch",
    "gap_loss_best": "loss gap (val - train) at best epoch",
    "gap_acc_end": "acc gap at end",
    "gap_loss_end": "loss gap at end",
    "best_epoch": "best epoch",
    "seconds_to_best": "wall time to best (s)",
}
#: Compared between architectures, paired by seed.
COMPARED = ("test_top1", "test_balanced", "test_nll", "test_ece", "gap_acc_best")


@dataclass
class RunRecord:
    """What one finished run contributes."""

    name: str
    label: str
    arch: str
    seed: int
    fraction: float
    status: str
    train_images: int | None = None
    split: str = "test"
    test_top1: float | None = None
    test_balanced: float | None = None
    test_nll: float | None = None
    test_ece: float | None = None
    gap_acc_best: float | None = None
    gap_loss_best: float | None = None
    gap_acc_end: float | None = None
    gap_loss_end: float | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    seconds_to_best: float | None = None
    seconds_total: float | None = None
    params: int | None = None
    macs: int | None = None


@dataclass
class Stat:
    n: int
    mean: float | None
    std: float | None
    ci95: float | None  # half-width of the 95% confidence interval of the mean

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GroupStats:
    label: str
    fraction: float
    runs: int
    params: int | None
    macs: int | None
    stats: dict[str, Stat]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "fraction": self.fraction, "runs": self.runs, "params": self.params,
            "macs": self.macs, "stats": {k: v.to_dict() for k, v in self.stats.items()},
        }  # fmt: skip


@dataclass
class Comparison:
    """``label`` minus ``reference`` at one fraction, paired by seed."""

    metric: str
    fraction: float
    label: str
    reference: str
    seeds: list[int]
    mean_diff: float | None
    ci95: float | None
    p_value: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sentence(self) -> str:
        if self.mean_diff is None:
            return f"{self.label} vs {self.reference} at {self.fraction:g}: no paired seeds yet"
        points = self.metric in ("test_top1", "test_balanced", "test_ece", "gap_acc_best")
        scale, unit = (100, " points") if points else (1, "")
        head = f"{self.label} - {self.reference}, {METRICS[self.metric]}, {self.fraction:g} of the train part: "
        if self.ci95 is None:  # one paired seed: a difference, but no spread to state
            return f"{head}{self.mean_diff * scale:+.2f}{unit} (one paired seed: no confidence interval)"
        p = f", p = {self.p_value:.3g}" if self.p_value is not None else ""
        return (
            f"{head}{self.mean_diff * scale:+.2f} ± {self.ci95 * scale:.2f}{unit} "
            f"(95% CI, paired t over {len(self.seeds)} seeds{p})"
        )


@dataclass
class StudyReport:
    study_dir: Path
    plan: StudyPlan
    records: list[RunRecord]
    groups: list[GroupStats]
    comparisons: list[Comparison]
    missing: list[tuple[str, str]] = field(default_factory=list)  # (run, status) not finished

    def to_dict(self) -> dict[str, Any]:
        return {
            "study_dir": str(self.study_dir),
            "plan": self.plan.to_dict(),
            "method": "mean, sample std (n-1), 95% CI of the mean from Student's t; comparisons paired by seed "
            "with the paired t-test",
            "groups": [g.to_dict() for g in self.groups],
            "comparisons": [c.to_dict() for c in self.comparisons],
            "runs": [asdict(r) for r in self.records],
            "missing": [{"run": name, "status": status} for name, status in self.missing],
        }


def describe(values: list[float]) -> Stat:
    """Mean, sample standard deviation and 95% t confidence half-width (None where n is too small)."""
    import numpy as np
    from scipy import stats

    n = len(values)
    if not n:
        return Stat(0, None, None, None)
    mean = float(np.mean(values))
    if n < 2:
        return Stat(n, mean, None, None)
    std = float(np.std(values, ddof=1))
    return Stat(n, mean, std, float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)))


def paired(a: list[float], b: list[float]) -> tuple[float | None, float | None, float | None]:
    """Mean of ``a - b``, its 95% CI half-width and the paired t-test's p-value."""
    if not a:
        return None, None, None
    from scipy import stats

    diff = [x - y for x, y in zip(a, b, strict=True)]
    stat = describe(diff)
    if len(diff) < 2:
        return stat.mean, None, None
    p = float(stats.ttest_rel(a, b).pvalue) if stat.std else (0.0 if stat.mean else 1.0)
    return stat.mean, stat.ci95, p


def study_report(study_dir: str | Path) -> StudyReport:
    """Aggregate the finished runs of the study in ``study_dir``.

    Raises:
        ConfigError: no study there.
    """
    study_dir = Path(study_dir)
    plan = read_plan(study_dir)
    if plan is None:
        raise ConfigError(f"no study in {study_dir} (no study.json): start one with 'resnet study {study_dir} ...'")
    records, missing = [], []
    sizes: dict[str, tuple[int | None, int | None]] = {}
    for run in plan.runs(study_dir):
        status = run_status(run, plan.eval_split)
        if status != "done":
            missing.append((run.name, status))
            continue
        record = read_run_record(run.folder, plan.eval_split)
        record.label, record.seed, record.fraction, record.status = run.spec.label, run.seed, run.fraction, status
        if record.label not in sizes:
            sizes[record.label] = _size_of(run.folder)
        record.params, record.macs = sizes[record.label]
        records.append(record)
    groups = []
    labels = [spec.label for spec in plan.archs]
    for fraction in plan.fractions:
        for label in labels:
            chosen = [r for r in records if r.label == label and r.fraction == fraction]
            stats = {m: describe([getattr(r, m) for r in chosen if getattr(r, m) is not None]) for m in METRICS}
            params, macs = sizes.get(label, (None, None))
            groups.append(GroupStats(label, fraction, len(chosen), params, macs, stats))
    comparisons = []
    if len(labels) > 1:
        reference = labels[0]
        for fraction in plan.fractions:
            for label in labels[1:]:
                for metric in COMPARED:
                    ours = {r.seed: getattr(r, metric) for r in records if r.label == label and r.fraction == fraction}
                    theirs = {
                        r.seed: getattr(r, metric) for r in records if r.label == reference and r.fraction == fraction
                    }
                    seeds = sorted(s for s in ours if s in theirs and ours[s] is not None and theirs[s] is not None)
                    mean, ci, p = paired([ours[s] for s in seeds], [theirs[s] for s in seeds])
                    comparisons.append(Comparison(metric, fraction, label, reference, seeds, mean, ci, p))
    return StudyReport(study_dir, plan, records, groups, comparisons, missing)


def read_run_record(folder: Path, split: str) -> RunRecord:
    """A run's figures from its files (a finished, evaluated run)."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    summary = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    report = json.loads((folder / f"eval-{split}.json").read_text(encoding="utf-8"))
    history = read_history(folder)
    train = config.get("train", {})
    record = RunRecord(
        name=folder.name, label="", arch=str(config["model"]["arch"]), seed=int(train.get("seed", 0)),
        fraction=float(train.get("train_fraction", 1.0)), status="done", train_images=config.get("train_images"),
        split=split, test_top1=report.get("top1"), test_balanced=report.get("balanced_accuracy"),
        test_nll=report.get("nll", report.get("loss")), test_ece=report.get("ece"),
        best_epoch=int(summary["best_epoch"]), epochs_run=int(summary["epochs_run"]),
    )  # fmt: skip
    best = next((r for r in history if r.epoch == record.best_epoch), None)
    last = history[-1] if history else None
    for when, row in (("best", best), ("end", last)):
        if row is not None and row.train_eval_acc is not None and row.train_eval_loss is not None:
            setattr(record, f"gap_acc_{when}", row.train_eval_acc - row.val_acc)
            setattr(record, f"gap_loss_{when}", row.val_loss - row.train_eval_loss)
    times = [r.epoch_time for r in history]
    if all(t is not None for t in times):
        best_epoch = int(summary["best_epoch"])
        record.seconds_total = float(sum(t for t in times if t is not None))
        record.seconds_to_best = float(sum(r.epoch_time or 0.0 for r in history if r.epoch <= best_epoch))
    return record


def _size_of(folder: Path) -> tuple[int | None, int | None]:
    """Parameters and MACs per image of a run's network at its image size."""
    from resnet_cli.models.summary import summarize

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        model = ModelConfig.from_dict(config["model"])
        summary = summarize(model, image_size=int(config["preprocess"]["image_size"]), depth=1)
    except (OSError, ValueError, KeyError, ConfigError):
        return None, None
    return summary.total_params, summary.total_macs


# --- files -----------------------------------------------------------------------------------------------------


def runs_csv(report: StudyReport) -> str:
    buffer = io.StringIO()
    columns = list(RunRecord.__dataclass_fields__)
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for record in report.records:
        writer.writerow(["" if getattr(record, c) is None else getattr(record, c) for c in columns])
    return buffer.getvalue()


def _cell(stat: Stat, percent: bool) -> str:
    if stat.mean is None:
        return "-"
    scale, unit = (100, "") if percent else (1, "")
    text = f"{stat.mean * scale:.2f}{unit}"
    if stat.std is not None:
        text += f" ± {stat.std * scale:.2f} [{(stat.mean - (stat.ci95 or 0)) * scale:.2f}, "
        text += f"{(stat.mean + (stat.ci95 or 0)) * scale:.2f}]"
    return text


PERCENT = {"test_top1", "test_balanced", "test_ece", "gap_acc_best", "gap_acc_end"}


def report_markdown(report: StudyReport) -> str:
    plan = report.plan
    lines = [
        f"# Study {report.study_dir}",
        "",
        f"Data `{plan.data}`, measured on the {plan.eval_split} part; seeds {', '.join(map(str, plan.seeds))}; train "
        f"fractions {', '.join(f'{f:g}' for f in plan.fractions)}; training options "
        f"`{' '.join(plan.train_args) or '(defaults)'}`.",
        "",
        "Each cell: mean ± standard deviation over seeds [95% confidence interval of the mean, Student's t]. "
        "Accuracies, ECE and accuracy gaps in percent. Gaps use the eval-mode train subset: accuracy gap = "
        "train - val, loss gap = val - train (positive means overfitting).",
        "",
    ]
    shown = ("test_top1", "test_balanced", "test_nll", "test_ece", "gap_acc_best", "gap_loss_best", "best_epoch",
             "seconds_to_best")  # fmt: skip
    lines.append("| arch | fraction | runs | params | MACs | " + " | ".join(METRICS[m] for m in shown) + " |")
    lines.append("|" + "---|" * (5 + len(shown)))
    for g in report.groups:
        size = f"{g.params / 1e6:.2f} M" if g.params else "-"
        macs = f"{g.macs / 1e6:.1f} M" if g.macs else "-"
        cells = [_cell(g.stats[m], m in PERCENT) for m in shown]
        lines.append(f"| {g.label} | {g.fraction:g} | {g.runs} | {size} | {macs} | " + " | ".join(cells) + " |")
    if report.comparisons:
        lines += ["", "## Paired comparisons (by seed)", ""]
        lines += [f"- {c.sentence()}" for c in report.comparisons if c.metric in ("test_top1", "gap_acc_best")]
    if report.missing:
        lines += ["", "## Not finished", ""]
        lines += [f"- {name}: {status}" for name, status in report.missing]
    return "\n".join(lines) + "\n"


def write_report_files(report: StudyReport) -> list[Path]:
    """``report.md``, ``runs.csv`` and ``report.json`` in the study folder."""
    paths = [report.study_dir / name for name in ("report.md", "runs.csv", "report.json")]
    atomic_write_text(paths[0], report_markdown(report))
    atomic_write_text(paths[1], runs_csv(report))
    atomic_write_text(paths[2], json.dumps(report.to_dict(), indent=2) + "\n")
    return paths

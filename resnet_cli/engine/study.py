"""``resnet study``: a controlled comparison of architectures over seeds and train fractions.

The plan (``STUDY/study.json``) is a grid of architecture x seed x train fraction. Every run is an ordinary
``resnet train`` run folder under ``STUDY/runs/`` (trained by the same ``fit``, on the same manifest,
preprocessing, recipe and epoch budget; only ``--arch``, ``--seed`` and ``--train-fraction`` vary, plus any
recorded per-architecture overrides), evaluated afterwards on the test part (on val where there is none).

Running is resumable and idempotent: a finished and evaluated run is skipped, an interrupted one resumes from
its ``last.pt``, a trained one is only evaluated. Each run trains in its own ``resnet train`` process (exactly
the command :meth:`PlannedRun.train_command` prints), so a study costs what the same commands cost by hand
and GNU parallel, Slurm arrays or any scheduler can run the printed commands instead.

:func:`resnet_cli.engine.study_report.study_report` aggregates whatever has finished.
"""

from __future__ import annotations

import json
import math
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_cli.config import TrainConfig
from resnet_cli.errors import ConfigError, Interrupted, ResnetError, RunBusyError
from resnet_cli.fs import atomic_write_text, check_not_busy
from resnet_cli.models import canonical_arch, run_name

PLAN_NAME = "study.json"
PLAN_VERSION = 1
RUNS = "runs"
#: Options the grid itself sets for every run: they cannot be given as study-wide or per-architecture options.
GRID_OPTIONS = ("data", "manifest", "arch", "out", "seed", "train_fraction")


@dataclass(frozen=True)
class ArchSpec:
    """One architecture of the grid, with its recorded recipe overrides (``vit-s/4:lr=5e-4,epochs=50``)."""

    arch: str  # canonical name
    overrides: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        """A file-name-safe name: ``r34``, ``vit-s4``, or with overrides ``vit-s4-lr5e-4``."""
        extra = "".join(f"-{key.replace('_', '')}{value}" for key, value in self.overrides)
        return run_name(self.arch) + "".join(c if c.isalnum() or c in "-.+" else "_" for c in extra)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "overrides": [list(pair) for pair in self.overrides]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        return cls(str(data["arch"]), tuple((str(k), str(v)) for k, v in data.get("overrides", [])))


def parse_arch_spec(text: str) -> ArchSpec:
    """``"34"``, ``"vit-s/4"`` or ``"vit-s/4:lr=5e-4,warmup-epochs=2"`` -> :class:`ArchSpec`.

    Raises:
        ConfigError: an unknown architecture, a malformed override or one naming a grid option.
    """
    name, _, rest = text.partition(":")
    arch = canonical_arch(name)
    overrides = []
    fields = {f.replace("-", "_") for f in TrainConfig.__dataclass_fields__}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_").lstrip("_")
        if not sep or not value.strip():
            raise ConfigError(f"--arch {text}: write overrides as key=value, e.g. {name}:lr=5e-4,epochs=50")
        if key not in fields or key in GRID_OPTIONS:
            raise ConfigError(
                f"--arch {text}: {key!r} is not a training option an architecture may override "
                f"(the grid sets {', '.join(GRID_OPTIONS)})"
            )
        overrides.append((key, value.strip()))
    return ArchSpec(arch, tuple(overrides))


def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> seeds 0, 1, 2; ``"1,5,9"`` -> those seeds."""
    try:
        if "," not in text:
            count = int(text)
            if count < 1:
                raise ValueError
            return list(range(count))
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(
            f"--seeds takes a count (3: seeds 0, 1, 2) or a list (0,1,2; one seed alone: 5,), got {text!r}"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must list distinct seeds, got {text!r}")
    return seeds


def parse_fractions(text: str) -> list[float]:
    """``"0.1,0.3,1"`` -> [0.1, 0.3, 1.0], each in (0, 1], distinct, sorted."""
    try:
        values = sorted({float(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise ConfigError(f"--fractions takes numbers in (0, 1] such as 0.1,0.3,1.0, got {text!r}") from None
    if not values or not all(0 < v <= 1 and math.isfinite(v) for v in values):
        raise ConfigError(f"--fractions takes numbers in (0, 1] such as 0.1,0.3,1.0, got {text!r}")
    return values


def _flag(key: str) -> str:
    spec = TrainConfig.__dataclass_fields__[key]
    return str(spec.metadata.get("flag", "--" + key.replace("_", "-"))).split("/")[0]


def override_args(overrides: Sequence[tuple[str, str]]) -> list[str]:
    """Overrides as ``train`` flags: ``("lr", "5e-4")`` -> ``--lr 5e-4``; booleans as ``--flag``/``--no-flag``."""
    args: list[str] = []
    for key, value in overrides:
        spec = TrainConfig.__dataclass_fields__[key]
        flag = str(spec.metadata.get("flag", "--" + key.replace("_", "-")))
        if "/" in flag or spec.type in ("bool", bool):
            on, _, off = flag.partition("/")
            truth = value.lower() in ("1", "true", "yes", "on")
            if not truth and value.lower() not in ("0", "false", "no", "off"):
                raise ConfigError(f"{key}={value}: write true or false")
            args.append(on if truth else off or f"--no-{on.removeprefix('--')}")
        else:
            args += [flag, value]
    return args


@dataclass(frozen=True)
class PlannedRun:
    """One cell of the grid."""

    spec: ArchSpec
    seed: int
    fraction: float
    folder: Path  # the run folder
    data: str
    manifest: str | None
    train_args: tuple[str, ...]  # the study-wide training options

    @property
    def name(self) -> str:
        return self.folder.name

    def train_args_full(self) -> list[str]:
        args = ["--data", self.data, *(["--manifest", self.manifest] if self.manifest else [])]
        args += ["--arch", self.spec.arch, "--seed", str(self.seed), "--train-fraction", f"{self.fraction:g}"]
        return [*args, *self.train_args, *override_args(self.spec.overrides), "--out", str(self.folder)]

    def train_command(self, program: Sequence[str] = ("resnet",)) -> list[str]:
        return [*program, "train", *self.train_args_full()]

    def shell_line(self, split: str, status: str = "pending") -> str:
        """The self-contained line ``--print-commands`` prints for a run in ``status`` (:func:`run_status`): train
        (resume an interrupted run, start over after a start killed before its first checkpoint), then evaluate;
        a trained run only needs its evaluation."""
        evaluate = shlex.join(["resnet", "eval", str(self.folder), "--split", split, "--quiet"])
        if status == "trained":
            return evaluate
        train = {
            "interrupted": ["resnet", "train", "--resume", "--out", str(self.folder)],
            "leftover": [*self.train_command(), "--force"],
        }.get(status, self.train_command())
        return f"{shlex.join(train)} --quiet && {evaluate}"


@dataclass
class StudyPlan:
    """What ``study.json`` records."""

    data: str
    manifest: str | None
    archs: list[ArchSpec]
    seeds: list[int]
    fractions: list[float]
    train_args: list[str]
    eval_split: str = "test"

    def runs(self, study_dir: Path) -> list[PlannedRun]:
        """Every run of the grid, fractions first, then seeds, then architectures (so the comparison at the
        smallest data size completes first)."""
        return [
            PlannedRun(
                spec,
                seed,
                fraction,
                study_dir / RUNS / f"{spec.label}-f{fraction:g}-s{seed}",
                self.data,
                self.manifest,
                tuple(self.train_args),
            )
            for fraction in self.fractions
            for seed in self.seeds
            for spec in self.archs
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "data": self.data,
            "manifest": self.manifest,
            "archs": [a.to_dict() for a in self.archs],
            "seeds": list(self.seeds),
            "fractions": list(self.fractions),
            "train_args": list(self.train_args),
            "eval_split": self.eval_split,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyPlan:
        return cls(
            str(data["data"]),
            data.get("manifest"),
            [ArchSpec.from_dict(a) for a in data["archs"]],
            [int(s) for s in data["seeds"]],
            [float(f) for f in data["fractions"]],
            [str(a) for a in data["train_args"]],
            str(data.get("eval_split", "test")),
        )


def read_plan(study_dir: Path) -> StudyPlan | None:
    """The plan in ``study_dir``, or None when there is none.

    Raises:
        ConfigError: a damaged plan file.
    """
    path = study_dir / PLAN_NAME
    if not path.is_file():
        return None
    try:
        return StudyPlan.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is damaged ({exc}): restore it or start the study in another folder") from None


def merge_plan(old: StudyPlan | None, new: StudyPlan, study_dir: Path) -> StudyPlan:
    """The plan to run: ``new`` when there was none; the union when ``new`` only adds seeds, fractions or archs.

    An architecture with other overrides (``vit-s/4:lr=1e-3`` beside ``vit-s/4``) is another member of the grid,
    so it is an addition too. Training options are compared as given (the same options in another order are a
    change).

    Raises:
        ConfigError: the data, manifest or training options changed.
    """
    if old is None:
        return new
    changes = []
    if Path(old.data).resolve() != Path(new.data).resolve():
        changes.append(f"--data {new.data} (the study uses {old.data})")
    if (old.manifest or None) != (new.manifest or None):
        changes.append(f"--manifest {new.manifest} (the study uses {old.manifest})")
    if old.train_args != new.train_args:
        changes.append(f"training options {shlex.join(new.train_args) or '(none)'} (the study uses "
                       f"{shlex.join(old.train_args) or '(none)'})")  # fmt: skip
    old_by_arch = {a.label: a for a in old.archs}
    if changes:
        raise ConfigError(
            f"{study_dir / PLAN_NAME} plans another study: {'; '.join(changes)}. A rerun may only add seeds, "
            "fractions or architectures: start a new study folder for other settings"
        )
    archs = list(old.archs) + [a for a in new.archs if a.label not in old_by_arch]
    seeds = list(old.seeds) + [s for s in new.seeds if s not in old.seeds]
    fractions = sorted(set(old.fractions) | set(new.fractions))
    return StudyPlan(old.data, old.manifest, archs, seeds, fractions, list(old.train_args), old.eval_split)


def write_plan(study_dir: Path, plan: StudyPlan) -> None:
    study_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(study_dir / PLAN_NAME, json.dumps(plan.to_dict(), indent=2) + "\n")


# --- run status ------------------------------------------------------------------------------------------------


def run_status(run: PlannedRun, split: str) -> str:
    """``done`` (trained and evaluated on ``split``), ``trained``, ``interrupted`` (a resumable last.pt),
    ``leftover`` (files without a checkpoint: a start killed early) or ``pending``."""
    folder = run.folder
    if (folder / "run.json").is_file():
        return "done" if (folder / f"eval-{split}.json").is_file() else "trained"
    if (folder / "last.pt").is_file():
        return "interrupted"
    if folder.is_dir() and any(folder.iterdir()):
        return "leftover"
    return "pending"


@dataclass
class StudyEvent:
    """Progress of :func:`run_study`, for the command line's lines."""

    kind: str  # "start" (a run begins), "skip", "finish", "fail"
    run: PlannedRun
    index: int
    total: int
    detail: str = ""
    seconds: float = 0.0


@dataclass
class StudyRunResult:
    ran: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)


def run_study(
    plan: StudyPlan,
    study_dir: Path,
    *,
    gpus: Sequence[int] = (),
    on_event: Callable[[StudyEvent], None] | None = None,
    stop: Any = None,
    program: Sequence[str] | None = None,
) -> StudyRunResult:
    """Train and evaluate every run of ``plan`` that is not done yet.

    Runs train one at a time, each in its own ``resnet train`` process; with ``gpus``, one run per GPU at a time
    (``--device cuda:N``). A run that fails is reported and the others go on.

    Args:
        stop: a :class:`resnet_cli.engine.callbacks.StopRequest`; when set, the running trainings are asked to stop
            (they save a resumable checkpoint) and :class:`Interrupted` is raised once they have.
        program: the command that starts ``resnet`` (default: this Python with ``-m resnet_cli``).

    Raises:
        Interrupted: ``stop`` was requested.
    """
    program = list(program or [sys.executable, "-m", "resnet_cli"])
    runs = plan.runs(study_dir)
    result = StudyRunResult()
    emit = on_event or (lambda event: None)
    slots: list[str | None] = [str(g) for g in gpus] or [None]
    active: dict[str | None, tuple[subprocess.Popen[bytes], PlannedRun, int, float]] = {}
    queue = list(enumerate(runs, start=1))

    def finish(slot: str | None) -> None:
        proc, run, index, started = active.pop(slot)
        code = proc.wait()
        if stop is not None and stop.requested:
            return  # stopped, not failed: the rerun resumes it
        if code != 0:
            result.failed.append(run.name)
            emit(StudyEvent("fail", run, index, len(runs), f"resnet train exited {code}", time.monotonic() - started))
            return
        try:
            detail = _evaluate(run, plan.eval_split, slot)
        except ResnetError as exc:
            result.failed.append(run.name)
            emit(StudyEvent("fail", run, index, len(runs), f"eval: {exc}", time.monotonic() - started))
            return
        result.ran += 1
        emit(StudyEvent("finish", run, index, len(runs), detail, time.monotonic() - started))

    try:
        while queue or active:
            if stop is not None and stop.requested:
                break
            free = [slot for slot in slots if slot not in active]
            if queue and free:
                index, run = queue.pop(0)
                status = run_status(run, plan.eval_split)
                if status == "done":
                    result.skipped += 1
                    emit(StudyEvent("skip", run, index, len(runs), "done"))
                    continue
                try:
                    check_not_busy(run.folder)
                except RunBusyError as exc:
                    result.failed.append(run.name)
                    emit(StudyEvent("fail", run, index, len(runs), str(exc)))
                    continue
                if status == "trained":
                    started = time.monotonic()
                    try:
                        detail = _evaluate(run, plan.eval_split, free[0])
                        result.ran += 1
                        emit(StudyEvent("finish", run, index, len(runs), detail, time.monotonic() - started))
                    except ResnetError as exc:
                        result.failed.append(run.name)
                        emit(StudyEvent("fail", run, index, len(runs), f"eval: {exc}"))
                    continue
                args = {
                    "interrupted": ["train", "--resume", "--out", str(run.folder)],
                    "leftover": ["train", *run.train_args_full(), "--force"],
                    "pending": ["train", *run.train_args_full()],
                }[status]
                slot = free[0]
                device = ["--device", f"cuda:{slot}"] if slot is not None else []  # the last --device given wins
                emit(StudyEvent("start", run, index, len(runs), status))
                proc = subprocess.Popen(
                    [*program, *args, *device, "--quiet"], stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent
                )
                active[slot] = (proc, run, index, time.monotonic())
                continue
            # Every slot is busy (or nothing is left to start): wait for the first run to end.
            ended = [slot for slot, (proc, *_rest) in active.items() if proc.poll() is not None]
            while active and not ended and not (stop is not None and stop.requested):
                time.sleep(0.1)
                ended = [slot for slot, (proc, *_rest) in active.items() if proc.poll() is not None]
            for slot in ended:
                finish(slot)
    finally:
        for proc, *_rest in active.values():  # a stop, or an error here: the runs save and exit
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, *_rest in active.values():
            proc.wait()
    if stop is not None and stop.requested:
        raise Interrupted(
            f"study stopped by {signal.Signals(stop.signal or 2).name}; the runs saved resumable checkpoints: "
            f"run the same 'resnet study {study_dir}' command to continue",
            128 + (stop.signal or 2),
        )
    return result


def _die_with_parent() -> None:
    """In the child: receive SIGTERM when the study process dies (Linux), so no training outlives it."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the run goes on and the rerun waits for its lock


def _evaluate(run: PlannedRun, split: str, gpu: str | None = None) -> str:
    """Evaluate a trained run in this process (on the GPU its training used, with --gpus)."""
    from resnet_cli.engine.evaluate import evaluate

    report = evaluate(run.folder, split=split, force=True, device=f"cuda:{gpu}" if gpu is not None else "auto")
    return f"{split} accuracy {report.top1:.2%}"


def check_runnable(plan: StudyPlan) -> None:
    """Refuse a plan whose manifest has no part to measure on.

    Raises:
        ConfigError, DatasetError: the manifest cannot be read or has no val part.
    """
    from resnet_cli.engine.run_dir import load_manifest

    manifest = load_manifest(TrainConfig(data=plan.data, manifest=plan.manifest))
    if not manifest.part("val"):
        raise ConfigError(f"{manifest.path} has no val part: split with --val first")
    plan.eval_split = "test" if manifest.part("test") else "val"


__all__ = [
    "ArchSpec",
    "PlannedRun",
    "StudyEvent",
    "StudyPlan",
    "check_runnable",
    "merge_plan",
    "parse_arch_spec",
    "parse_fractions",
    "parse_seeds",
    "read_plan",
    "run_status",
    "run_study",
    "write_plan",
]

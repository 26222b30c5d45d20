"""``evaluate``: a checkpoint or export on one part of a manifest, with per-class metrics (scikit-learn)."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet_cli.config import resolve_workers
from resnet_cli.data.dataset import EpochBatchSampler, ManifestDataset, make_loader
from resnet_cli.data.split import COLUMNS, PARTS, Manifest, ManifestRow, sidecar_path
from resnet_cli.data.transforms import eval_transform
from resnet_cli.engine.calibration import calibration_summary, fit_temperature
from resnet_cli.engine.callbacks import Callback, CallbackList
from resnet_cli.engine.device import resolve_device
from resnet_cli.engine.inference import inference_network, predict_batches
from resnet_cli.errors import CheckpointError, ConfigError, DatasetError, RunFailedError
from resnet_cli.fs import atomic_write_text, record_owned, refuse_overwrite_unless_owned, run_lock
from resnet_cli.io.weights import LoadedWeights, find_manifest, load_weights, read_run_config

#: The copy of the manifest a training run keeps in its folder (exactly the bytes it trained on).
RUN_MANIFEST_NAME = "manifest.csv"


@dataclass(frozen=True)
class ClassMetrics:
    """Precision, recall, F1 and support of one class; ``to_dict`` is its row in the JSON report."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int  # images of this class in the evaluated part

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.name,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
        }


@dataclass
class EvalReport:
    """Everything ``resnet eval`` reports; ``to_dict`` is the JSON written to ``eval-<split>.json``."""

    weights: str
    weights_sha256: str
    split: str
    manifest: str
    classes: list[str]
    images: int
    loss: float
    top1: float
    top5: float | None  # only with more than 5 classes
    balanced_accuracy: float
    per_class: list[ClassMetrics]
    macro: dict[str, float]
    weighted: dict[str, float]
    confusion_matrix: list[list[int]]
    nll: float  # mean cross-entropy in float64 (``loss`` is the same in float32)
    ece: float  # top-1 expected calibration error over 15 equal-width confidence bins, in [0, 1]
    brier: float  # mean over images of the squared distance between probabilities and the one-hot label
    reliability: list[dict[str, Any]]  # the ECE's bins: lower, upper, count, confidence, accuracy
    images_per_s: float
    device: str
    precision: str
    checkpoint: str | None = None  # which weights, in words: "best.pt (epoch 3)"
    temperature: float | None = None  # fitted on the val part with ``temperature=True``
    # With a temperature: nll, ece, brier, top1 and reliability of this split's logits divided by it.
    calibrated: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)  # one line each, for the user
    report_path: str | None = None
    predictions_path: str | None = None
    predictions: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        doc = {k: v for k, v in self.__dict__.items() if k != "predictions"}
        doc["per_class"] = [c.to_dict() for c in self.per_class]
        return doc


def evaluate(
    target: str | os.PathLike[str],
    split: str = "test",
    data: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    workers: int | None = None,
    save: bool = True,
    force: bool = False,
    callbacks: Sequence[Callback] = (),
    callback: Callback | None = None,
    ema: bool = True,
    temperature: bool = False,
) -> EvalReport:
    """Evaluate weights on a manifest part and (with ``save``) write the report and per-image predictions.

    When the weights sit in a run folder that recorded another manifest than the one evaluated on (the data
    was split again after training), the evaluated images are checked against the run's train part (by
    relative path and by content hash): any overlap is refused, since the figures would be measured on
    training images; no overlap leaves a warning in :attr:`EvalReport.warnings`.

    Args:
        target: a run folder (its best.pt), a ``.pt`` checkpoint or a ``.safetensors`` export.
        split: ``test``, ``val`` or ``train``.
        data: the data folder, when it is not where training found it (or for a ``.safetensors``).
        manifest: a manifest kept elsewhere than ``DATA/manifest.csv``; a run's own ``manifest.csv`` copy works
            too (the split it trained on).
        batch_size: default: the training batch size (or 64).
        precision: ``auto`` evaluates in the precision the weights were trained in, where this device can.
        workers: data-loading processes; ``None`` chooses as :func:`resnet_cli.config.resolve_workers` does.
        save: write ``eval-<split>.json`` and ``predictions-<split>.csv`` beside the weights (under the run
            folder's lock; earlier reports the tool wrote are replaced, a user's files need ``force``);
            ``eval-<split>-raw.json`` and ``predictions-<split>-raw.csv`` for the raw weights (``ema=False``)
            of a run that kept a moving average.
        force: replace files of those names that the tool did not write.
        callbacks: progress hooks (``on_validation_start``, ``on_validation_step``); with ``temperature`` and
            another split than val, the val pass reports its own steps after the split's.
        callback: deprecated: use ``callbacks=[...]``.
        temperature: fit a temperature (temperature scaling) on the manifest's val part with the same weights
            and preprocessing, and report the split's calibration after dividing its logits by it
            (:attr:`EvalReport.calibrated`). Evaluating val itself still does it, with a warning that the
            figures are fitted on the images they are measured on.

    Raises:
        CheckpointError, DatasetError, ConfigError, DeviceError, OutputExistsError, RunBusyError: bad input;
            ConfigError also for ``temperature`` with a manifest that has no val part.
    """
    callbacks = list(callbacks)
    if callback is not None:
        warnings.warn(
            "evaluate(callback=...) is deprecated and will be removed in the next release: pass callbacks=[...]",
            DeprecationWarning,
            stacklevel=2,
        )
        callbacks.append(callback)
    if split not in PARTS:
        raise ConfigError(f"unknown split {split!r}: choose test, val or train")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    workers = resolve_workers(workers, "eval data loading")
    dev, _ = resolve_device(device)
    weights = load_weights(target, ema=ema)
    # The raw weights of a run that kept a moving average get their own files: the report of the weights of
    # record (what a study aggregates) is never replaced by another model's.
    suffix = "-raw" if weights.raw_of_average else ""
    report_path = weights.run_dir / f"eval-{split}{suffix}.json"
    predictions_path = weights.run_dir / f"predictions-{split}{suffix}.csv"
    if save:  # fail before the work, not after it: a busy run folder or a user's file in the way
        with _write_lock(weights.run_dir):
            _refuse_overwrite(report_path, predictions_path, force)
    man = _run_copy(weights, manifest, data) or find_manifest(weights, data, manifest)
    if list(man.classes) != list(weights.classes):
        raise CheckpointError(
            f"the classes of {weights.source} ({_short(weights.classes)}) do not match those of {man.path} "
            f"({_short(man.classes)}): evaluate on the data the model was trained for"
        )
    rows = man.part(split)
    if not rows:
        hint = " (split with --test 0.1 to hold out a test part)" if split == "test" else ""
        raise DatasetError(f"the {split} part of {man.path} is empty{hint}")
    val_rows = man.part("val") if temperature else []
    if temperature and not val_rows:
        raise ConfigError(
            f"--temperature fits the temperature on the val part, and {man.path} has none: evaluate without "
            "--temperature, or pass --manifest with the manifest the run trained on"
        )
    note = getattr(weights, "note", None)
    notes: list[str] = [str(note)] if note else []
    notes += check_not_trained_on(weights.run_dir, man, rows, split)
    if temperature and split != "val":  # the temperature must not be fitted on training images either
        notes += [n for n in check_not_trained_on(weights.run_dir, man, val_rows, "val") if n not in notes]

    pre = weights.preprocess
    net, placement = inference_network(weights, dev, precision)
    size = batch_size or weights.batch_size
    hooks = CallbackList(callbacks)

    def run_logits(part: list[ManifestRow]) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = ManifestDataset(man.root, part, weights.classes, eval_transform(pre), pre.in_channels, pre.background)
        sampler = EpochBatchSampler(len(dataset), size, 0, shuffle=False, train=False)
        loader = make_loader(dataset, sampler, workers, 0, pin_memory=dev.type == "cuda")
        hooks.on_validation_start(0, len(loader))
        chunks, targets = [], []
        for batch_logits, batch_y in predict_batches(net, loader, placement, hooks):
            chunks.append(batch_logits)
            targets.append(batch_y)
        return torch.cat(chunks), torch.cat(targets)

    start = time.perf_counter()
    logits, y = run_logits(rows)
    seconds = time.perf_counter() - start
    report = build_report(logits, y, weights.classes)
    fitted: float | None = None
    calibrated: dict[str, Any] | None = None
    if temperature:
        fit_logits, fit_y = (logits, y) if split == "val" else run_logits(val_rows)
        fitted = fit_temperature(fit_logits, fit_y)
        calibrated = calibration_summary(logits.double() / fitted, y)
        if split == "val":
            notes.append(
                "the calibrated figures are fitted and measured on the same val images, so they are optimistic: "
                "evaluate with --split test --temperature for held-out figures"
            )
    probabilities = logits.softmax(dim=1)
    confidence, predicted = probabilities.max(dim=1)
    predictions = [
        {
            "path": row.path,
            "true": row.label,
            "predicted": weights.classes[int(p)],
            "confidence": round(float(c), 6),
            "correct": int(p) == int(t),
        }
        for row, p, c, t in zip(rows, predicted, confidence, y, strict=True)
    ]
    describe = getattr(weights, "describe", None)
    result = EvalReport(
        weights=str(weights.source),
        weights_sha256=weights.sha256,
        split=split,
        manifest=str(man.path),
        classes=list(weights.classes),
        images=len(rows),
        images_per_s=len(rows) / max(seconds, 1e-9),
        device=str(dev),
        precision=placement.precision,
        checkpoint=describe() if callable(describe) else weights.source.name,
        warnings=notes,
        temperature=fitted,
        calibrated=calibrated,
        predictions=predictions,
        **report,
    )
    if save:
        result.report_path = str(report_path)
        result.predictions_path = str(predictions_path)
        with _write_lock(weights.run_dir):
            _refuse_overwrite(report_path, predictions_path, force)
            atomic_write_text(predictions_path, _predictions_csv(predictions))
            atomic_write_text(report_path, json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n")
            record_owned(weights.run_dir, [predictions_path.name, report_path.name])
    return result


def check_not_trained_on(run_dir: Path, man: Manifest, rows: list[ManifestRow], split: str) -> list[str]:
    """Make sure ``rows`` (the ``split`` part of ``man``) hold none of the run's training images.

    Nothing to check when ``run_dir`` is no run folder (no ``config.json`` recording a manifest), when ``man``
    is the very manifest the run trained on (same SHA-256: its parts are disjoint), or for ``split="train"``.

    Returns:
        Warnings: the manifest differs from the run's, but none of ``rows`` was a training image.

    Raises:
        DatasetError: some of ``rows`` were training images; or the manifest differs and the run keeps no
            intact copy of its own, so membership cannot be verified.
    """
    recorded = ((read_run_config(run_dir) or {}).get("manifest")) if split != "train" else None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("sha256"), str):
        return []
    if recorded["sha256"] == man.csv_sha256:
        return []
    trained = _trained_part(run_dir, recorded)
    if trained is None:
        raise DatasetError(
            f"{man.path} is not the manifest {run_dir} was trained on (the data was split again?) and the run "
            f"keeps no intact copy of that one ({run_dir / RUN_MANIFEST_NAME}; runs of resnet-cli 0.1.0 keep "
            f"none), so whether its {split} images were training images cannot be checked: evaluate with "
            "--manifest pointing to the manifest it trained on"
        )
    paths, hashes = trained
    same_root = isinstance(recorded.get("root"), str) and _same_folder(Path(recorded["root"]), man.root)
    seen = [r for r in rows if r.sha256 in hashes or (same_root and r.path in paths)]
    if seen:
        raise DatasetError(
            f"{len(seen)} of the {len(rows)} {split} images in {man.path} were training images of {run_dir} "
            f"(e.g. {seen[0].path}): the data was split again after training, so the figures would be inflated; "
            f"evaluate on the split it trained on (--manifest {run_dir / RUN_MANIFEST_NAME}), or train again on "
            "the new split"
        )
    return [
        f"{man.path} is not the manifest {run_dir} was trained on; none of its {len(rows)} {split} images "
        "were training images of the run"
    ]


def _trained_part(run_dir: Path, recorded: dict[str, Any]) -> tuple[set[str], set[str]] | None:
    """(relative paths, content hashes) of the run's train part, from an intact copy of its manifest."""
    candidates = [run_dir / RUN_MANIFEST_NAME]
    if isinstance(recorded.get("path"), str):
        candidates.append(Path(recorded["path"]))  # still in place and unchanged (runs without a copy)
    for path in candidates:
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        if hashlib.sha256(raw).hexdigest() != recorded["sha256"]:
            continue
        rows = _parse_rows(raw, path)
        train = [r for r in rows if r.part == "train"]
        return {r.path for r in train}, {r.sha256 for r in train}
    return None


def _run_copy(
    weights: LoadedWeights, manifest: str | os.PathLike[str] | None, data: str | os.PathLike[str] | None
) -> Manifest | None:
    """The run's own ``manifest.csv`` copy when ``manifest`` names it (it has no sidecar: the run's
    ``config.json`` vouches for it by hash and says where its images are)."""
    if manifest is None:
        return None
    path = Path(manifest)
    config = read_run_config(path.parent) or {}
    recorded = config.get("manifest")
    if path.name != RUN_MANIFEST_NAME or not isinstance(recorded, dict) or not path.is_file():
        return None
    if sidecar_path(path).exists():
        return None  # a real manifest with a sidecar: find_manifest reads it
    raw = path.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    if sha != recorded.get("sha256"):
        raise DatasetError(
            f"{path} is not the manifest {path.parent} recorded (its SHA-256 differs from config.json): "
            "it was changed after training"
        )
    root = data if data is not None else recorded.get("root")
    if not isinstance(root, (str, os.PathLike)):
        raise DatasetError(f"{path.parent}/config.json does not say where the images are: pass --data DIR")
    rows = _parse_rows(raw, path)
    classes = [str(c) for c in config.get("classes") or weights.classes]
    unknown = sorted({r.label for r in rows} - set(classes))
    if unknown:
        raise DatasetError(f"{path} has classes the run does not know ({_short(unknown)}): it was changed")
    n = max(len(rows), 1)
    return Manifest(
        path=path,
        root=Path(root),
        rows=rows,
        classes=classes,
        seed=-1,
        val=sum(r.part == "val" for r in rows) / n,
        test=sum(r.part == "test" for r in rows) / n,
        csv_sha256=sha,
        meta={},
    )


def _parse_rows(raw: bytes, path: Path) -> list[ManifestRow]:
    try:
        reader = csv.reader(io.StringIO(raw.decode("utf-8")))
        header = next(reader, None)
        if header is None or tuple(header) != COLUMNS:
            raise DatasetError(f"{path} has columns {header}, expected {','.join(COLUMNS)}")
        return [ManifestRow(p, label, part, sha, int(w), int(h), mode) for p, label, part, sha, w, h, mode in reader]
    except (UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"{path} is not a readable manifest ({exc}): it was changed after training") from None


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _refuse_overwrite(report_path: Path, predictions_path: Path, force: bool) -> None:
    refuse_overwrite_unless_owned(report_path, force, "eval report")
    refuse_overwrite_unless_owned(predictions_path, force, "predictions file")


@contextlib.contextmanager
def _write_lock(folder: Path) -> Iterator[None]:
    """The run folder's one-writer lock (it also guards a plain folder a report is written beside)."""
    try:
        with run_lock(folder, "eval"):
            yield
    except PermissionError as exc:
        raise RunFailedError(
            f"cannot write in {folder} ({exc.strerror}): choose a folder you can write to, or pass --no-save"
        ) from None


def build_report(logits: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Loss, top-1/top-5, balanced accuracy, per-class metrics (:class:`ClassMetrics`), averages, confusion matrix,
    and calibration: NLL, ECE with its reliability bins, Brier score (:mod:`resnet_cli.engine.calibration`)."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

    k = len(classes)
    labels = list(range(k))
    y = targets.numpy()
    pred = logits.argmax(dim=1).numpy()
    loss = float(nn.functional.cross_entropy(logits, targets))
    top5 = None
    if k > 5:
        top = logits.topk(5, dim=1).indices
        top5 = float((top == targets[:, None]).any(dim=1).float().mean())
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    averages = {}
    for name in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(y, pred, labels=labels, average=name, zero_division=0)
        averages[name] = {"precision": float(ap), "recall": float(ar), "f1": float(af)}
    calibration = calibration_summary(logits, targets)
    present = sorted(set(y.tolist()))
    balanced = float(balanced_accuracy_score(y, pred)) if len(present) > 0 else math.nan
    return {
        "loss": loss,
        "top1": float((pred == y).mean()),
        "top5": top5,
        "balanced_accuracy": balanced,
        "per_class": [ClassMetrics(c, float(p[i]), float(r[i]), float(f[i]), int(s[i])) for i, c in enumerate(classes)],
        "macro": averages["macro"],
        "weighted": averages["weighted"],
        "confusion_matrix": confusion_matrix(y, pred, labels=labels).tolist(),
        "nll": calibration["nll"],
        "ece": calibration["ece"],
        "brier": calibration["brier"],
        "reliability": calibration["reliability"],
    }


def _predictions_csv(predictions: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("path", "true", "predicted", "confidence", "correct"))
    for p in predictions:
        writer.writerow((p["path"], p["true"], p["predicted"], f"{p['confidence']:.6f}", int(p["correct"])))
    return buffer.getvalue()


def _short(classes: list[str]) -> str:
    shown = ", ".join(classes[:4]) + (", ..." if len(classes) > 4 else "")
    return f"{len(classes)}: {shown}"

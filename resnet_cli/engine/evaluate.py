"""``evaluate``: a checkpoint or export on one part of a manifest, with per-class metrics (scikit-learn)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from resnet_cli.data.dataset import EpochBatchSampler, ManifestDataset, make_loader
from resnet_cli.data.split import PARTS
from resnet_cli.data.transforms import eval_transform
from resnet_cli.engine.callbacks import Callback
from resnet_cli.engine.device import resolve_device
from resnet_cli.engine.inference import inference_network, predict_batches
from resnet_cli.errors import CheckpointError, ConfigError, DatasetError
from resnet_cli.io.atomic import atomic_write_text, refuse_overwrite
from resnet_cli.io.weights import find_manifest, load_weights


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
    per_class: list[dict[str, Any]]
    macro: dict[str, float]
    weighted: dict[str, float]
    confusion_matrix: list[list[int]]
    images_per_s: float
    device: str
    precision: str
    report_path: str | None = None
    predictions_path: str | None = None
    predictions: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        doc = {k: v for k, v in self.__dict__.items() if k != "predictions"}
        return doc


def evaluate(
    target: str | os.PathLike[str],
    split: str = "test",
    data: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    workers: int = 0,
    save: bool = True,
    force: bool = False,
    callback: Callback | None = None,
) -> EvalReport:
    """Evaluate weights on a manifest part and (with ``save``) write the report and per-image predictions.

    Args:
        target: a run folder (its best.pt), a ``.pt`` checkpoint or a ``.safetensors`` export.
        split: ``test``, ``val`` or ``train``.
        data: the data folder, when it is not where training found it (or for a ``.safetensors``).
        manifest: a manifest kept elsewhere than ``DATA/manifest.csv``.
        batch_size: default: the training batch size (or 64).
        precision: ``auto`` evaluates in the precision the weights were trained in, where this device can.
        save: write ``eval-<split>.json`` and ``predictions-<split>.csv`` beside the weights.
        force: replace earlier reports.

    Raises:
        CheckpointError, DatasetError, ConfigError, DeviceError, OutputExistsError: bad input.
    """
    if split not in PARTS:
        raise ConfigError(f"unknown split {split!r}: choose test, val or train")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    dev, _ = resolve_device(device)
    weights = load_weights(target)
    report_path = weights.run_dir / f"eval-{split}.json"
    predictions_path = weights.run_dir / f"predictions-{split}.csv"
    if save:
        refuse_overwrite(report_path, force, "eval report")
        refuse_overwrite(predictions_path, force, "predictions file")
    man = find_manifest(weights, data, manifest)
    if list(man.classes) != list(weights.classes):
        raise CheckpointError(
            f"the classes of {weights.source} ({_short(weights.classes)}) do not match those of {man.path} "
            f"({_short(man.classes)}): evaluate on the data the model was trained for"
        )
    rows = man.part(split)
    if not rows:
        hint = " (split with --test 0.1 to hold out a test part)" if split == "test" else ""
        raise DatasetError(f"the {split} part of {man.path} is empty{hint}")

    pre = weights.preprocess
    net, placement = inference_network(weights, dev, precision)
    size = batch_size or weights.batch_size
    dataset = ManifestDataset(man.root, rows, weights.classes, eval_transform(pre), pre.in_channels, pre.background)
    sampler = EpochBatchSampler(len(dataset), size, 0, shuffle=False, train=False)
    loader = make_loader(dataset, sampler, workers, 0, pin_memory=dev.type == "cuda")

    if callback is not None:
        callback.on_validation_start(0, len(loader))
    start = time.perf_counter()
    chunks, targets = [], []
    for logits, y in predict_batches(net, loader, placement, callback):
        chunks.append(logits)
        targets.append(y)
    seconds = time.perf_counter() - start
    logits = torch.cat(chunks)
    y = torch.cat(targets)
    report = build_report(logits, y, weights.classes)
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
        predictions=predictions,
        **report,
    )
    if save:
        result.report_path = str(report_path)
        result.predictions_path = str(predictions_path)
        atomic_write_text(predictions_path, _predictions_csv(predictions))
        atomic_write_text(report_path, json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return result


def build_report(logits: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Loss, top-1/top-5, balanced accuracy, per-class precision/recall/F1/support, averages, confusion matrix."""
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
    present = sorted(set(y.tolist()))
    balanced = float(balanced_accuracy_score(y, pred)) if len(present) > 0 else math.nan
    return {
        "loss": loss,
        "top1": float((pred == y).mean()),
        "top5": top5,
        "balanced_accuracy": balanced,
        "per_class": [
            {"class": c, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        ],
        "macro": averages["macro"],
        "weighted": averages["weighted"],
        "confusion_matrix": confusion_matrix(y, pred, labels=labels).tolist(),
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

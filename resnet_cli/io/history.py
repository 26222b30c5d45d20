"""The per-epoch history of a run: ``history.csv``, one row per completed epoch."""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_cli.errors import DatasetError
from resnet_cli.fs import atomic_write_text

HISTORY_NAME = "history.csv"


@dataclass(frozen=True)
class EpochRecord:
    """One row of history.csv.

    ``train_loss`` and ``train_acc`` are running figures over the epoch's augmented batches in train mode;
    ``train_eval_loss`` and ``train_eval_acc`` measure a fixed, seeded, stratified subset of the train part
    (as large as val) at the epoch's end, in eval mode without augmentation, exactly as val is measured. The
    generalisation gap is honest only between the latter and val.
    """

    epoch: int
    train_loss: float  # plain cross-entropy of the training batches (without label smoothing)
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float | None = None
    epoch_time: float | None = None  # seconds, training and validation
    images_per_s: float | None = None  # training throughput
    train_eval_loss: float | None = None
    train_eval_acc: float | None = None
    ema_val_loss: float | None = None  # the weights' moving average (--ema) on val
    ema_val_acc: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


#: Columns every history needs (a model trained elsewhere can bring just these); the others are optional.
REQUIRED = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")
COLUMNS = (
    *REQUIRED,
    "lr",
    "epoch_time",
    "images_per_s",
    "train_eval_loss",
    "train_eval_acc",
    "ema_val_loss",
    "ema_val_acc",
)
_FORMATS = {
    "train_loss": ".6f",
    "train_acc": ".6f",
    "val_loss": ".6f",
    "val_acc": ".6f",
    "lr": ".6g",
    "epoch_time": ".3f",
    "images_per_s": ".1f",
    "train_eval_loss": ".6f",
    "train_eval_acc": ".6f",
    "ema_val_loss": ".6f",
    "ema_val_acc": ".6f",
}


def history_text(records: list[EpochRecord]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    # The moving-average columns only for runs that keep one (--ema).
    columns = COLUMNS if any(r.ema_val_loss is not None for r in records) else COLUMNS[:-2]
    writer.writerow(columns)
    for r in records:
        row: list[Any] = [r.epoch]
        for column in columns[1:]:
            value = getattr(r, column)
            row.append("" if value is None else format(value, _FORMATS[column]))
        writer.writerow(row)
    return buffer.getvalue()


def write_history(path: str | os.PathLike[str], records: list[EpochRecord]) -> None:
    atomic_write_text(path, history_text(records))


def read_history(path: str | os.PathLike[str]) -> list[EpochRecord]:
    """Read a history file (a run's, or any CSV with at least the columns in ``REQUIRED``).

    Raises:
        DatasetError: missing file or columns, or a malformed row.
    """
    path = Path(path)
    if path.is_dir():
        path = path / HISTORY_NAME
    if not path.is_file():
        raise DatasetError(f"no history at {path}: the run has not finished an epoch yet")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        present = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in present]
        if missing:
            raise DatasetError(f"{path} lacks the columns {', '.join(missing)} (needed: {', '.join(REQUIRED)})")
        records = []
        for line, row in enumerate(reader, start=2):
            try:
                values: dict[str, Any] = {c: float(row[c]) for c in REQUIRED[1:]}
                for column in COLUMNS[len(REQUIRED) :]:
                    text = (row.get(column) or "").strip()
                    values[column] = float(text) if text else None
                records.append(EpochRecord(epoch=int(float(row["epoch"])), **values))
            except (TypeError, ValueError):
                raise DatasetError(f"{path}, line {line}: malformed row") from None
    return records


def has_honest_train(records: list[EpochRecord]) -> bool:
    """Whether every record carries the eval-mode train-subset figures."""
    return bool(records) and all(r.train_eval_loss is not None and math.isfinite(r.train_eval_loss) for r in records)


def record_figures(record: EpochRecord) -> tuple[float, float]:
    """Validation loss and accuracy of the weights of record: the moving average's with --ema, else the model's."""
    if record.ema_val_loss is not None and record.ema_val_acc is not None:
        return record.ema_val_loss, record.ema_val_acc
    return record.val_loss, record.val_acc

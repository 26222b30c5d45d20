"""The per-epoch history of a run: ``history.csv``, one row per completed epoch."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_cli.errors import DatasetError
from resnet_cli.io.atomic import atomic_write_text

HISTORY_NAME = "history.csv"


@dataclass(frozen=True)
class EpochRecord:
    """One row of history.csv."""

    epoch: int
    train_loss: float  # plain cross-entropy of the training batches (without label smoothing)
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    epoch_time: float  # seconds, training and validation
    images_per_s: float  # training throughput

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time", "images_per_s")


def history_text(records: list[EpochRecord]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in records:
        writer.writerow(
            [
                r.epoch,
                f"{r.train_loss:.6f}",
                f"{r.train_acc:.6f}",
                f"{r.val_loss:.6f}",
                f"{r.val_acc:.6f}",
                f"{r.lr:.6g}",
                f"{r.epoch_time:.3f}",
                f"{r.images_per_s:.1f}",
            ]
        )
    return buffer.getvalue()


def write_history(path: str | os.PathLike[str], records: list[EpochRecord]) -> None:
    atomic_write_text(path, history_text(records))


def read_history(path: str | os.PathLike[str]) -> list[EpochRecord]:
    """Read a history file (a run's, or any CSV with these columns).

    Raises:
        DatasetError: missing file or columns.
    """
    path = Path(path)
    if path.is_dir():
        path = path / HISTORY_NAME
    if not path.is_file():
        raise DatasetError(f"no history at {path}: the run has not finished an epoch yet")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path} lacks the columns {', '.join(missing)}")
        records = []
        for line, row in enumerate(reader, start=2):
            try:
                records.append(
                    EpochRecord(
                        epoch=int(row["epoch"]),
                        **{c: float(row[c]) for c in COLUMNS[1:]},
                    )
                )
            except (TypeError, ValueError):
                raise DatasetError(f"{path}, line {line}: malformed row") from None
    return records

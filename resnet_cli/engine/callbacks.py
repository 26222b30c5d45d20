"""Progress hooks. The core reports through these; the CLI's rich bar and plain log are two implementations.

Every hook is a no-op here, so a callback overrides only what it needs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from resnet_cli.io.history import EpochRecord


@dataclass(frozen=True)
class BatchStats:
    """Running figures of the current epoch, after a training step."""

    step: int  # 1-based step within the epoch
    steps: int
    loss: float  # running mean over the epoch so far
    accuracy: float
    images_per_s: float


class Callback:
    """Base class of training and evaluation hooks."""

    def on_train_start(self, info: dict[str, Any]) -> None:
        """Once, after everything is resolved and before the first step (``info``: run folder, device, ...)."""

    def on_message(self, text: str) -> None:
        """A one-line notice (resumed, early stop, learning rate lowered)."""

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        """Before the first training step of ``epoch`` (1-based) of ``epochs``."""

    def on_batch_end(self, epoch: int, stats: BatchStats) -> None:
        """After each training step."""

    def on_validation_start(self, epoch: int, steps: int) -> None:
        """Before validation of ``epoch``."""

    def on_validation_step(self, step: int, steps: int) -> None:
        """After each validation or evaluation batch."""

    def on_epoch_end(self, record: EpochRecord, improved: bool) -> None:
        """After validation; ``improved`` when this epoch became the best checkpoint."""

    def on_train_end(self, result: Any) -> None:
        """Once, with the :class:`~resnet_cli.engine.train.TrainResult`."""


class CallbackList(Callback):
    """Fans every hook out to several callbacks, in order."""

    def __init__(self, callbacks: Sequence[Callback] = ()) -> None:
        self.callbacks = list(callbacks)

    def on_train_start(self, info: dict[str, Any]) -> None:
        for c in self.callbacks:
            c.on_train_start(info)

    def on_message(self, text: str) -> None:
        for c in self.callbacks:
            c.on_message(text)

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        for c in self.callbacks:
            c.on_epoch_start(epoch, epochs, steps)

    def on_batch_end(self, epoch: int, stats: BatchStats) -> None:
        for c in self.callbacks:
            c.on_batch_end(epoch, stats)

    def on_validation_start(self, epoch: int, steps: int) -> None:
        for c in self.callbacks:
            c.on_validation_start(epoch, steps)

    def on_validation_step(self, step: int, steps: int) -> None:
        for c in self.callbacks:
            c.on_validation_step(step, steps)

    def on_epoch_end(self, record: EpochRecord, improved: bool) -> None:
        for c in self.callbacks:
            c.on_epoch_end(record, improved)

    def on_train_end(self, result: Any) -> None:
        for c in self.callbacks:
            c.on_train_end(result)


class PrintProgress(Callback):
    """Plain progress lines, one per epoch and message, on ``stream`` (default: stderr); ``fit(progress=True)``
    adds it, so a notebook or script sees the run without the CLI.

    ``*`` marks an epoch whose validation loss is the best so far (its weights were saved as best.pt).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.epochs = 0
        self.started = 0.0

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(text + "\n")
        stream.flush()

    def on_train_start(self, info: dict[str, Any]) -> None:
        self.epochs = int(info.get("epochs", 0))
        self.started = time.perf_counter()
        self._write(f"training in {info.get('run_dir')} on {info.get('placement')} (* = best val loss so far)")

    def on_message(self, text: str) -> None:
        self._write(text)

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, record: EpochRecord, improved: bool) -> None:
        elapsed = time.perf_counter() - self.started
        self._write(
            f"epoch {record.epoch}/{self.epochs}  train loss {record.train_loss:.4f}  val loss {record.val_loss:.4f} "
            f"acc {record.val_acc:.2%}  {elapsed:.0f}s{' *' if improved else ''}"
        )


class StopRequest:
    """Set by a signal handler (or any caller) to ask training to stop after the current step."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def request(self, signum: int) -> None:
        if self.signal is None:
            self.signal = signum

    @property
    def requested(self) -> bool:
        return self.signal is not None

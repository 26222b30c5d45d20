"""Progress hooks. The core reports through these; the CLI's rich bar and plain log are two implementations.

Every hook is a no-op here, so a callback overrides only what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    """Fans every hook out to several callbacks."""

    def __init__(self, callbacks: list[Callback] | tuple[Callback, ...] = ()) -> None:
        self.callbacks = list(callbacks)

    def __getattribute__(self, name: str):
        if name.startswith("on_"):
            targets = object.__getattribute__(self, "callbacks")

            def fan_out(*args: Any, **kwargs: Any) -> None:
                for callback in targets:
                    getattr(callback, name)(*args, **kwargs)

            return fan_out
        return object.__getattribute__(self, name)


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

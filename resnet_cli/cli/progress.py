"""Progress on stderr: a rich bar in a terminal, plain lines at a sensible rate elsewhere, nothing with --quiet."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from resnet_cli.cli.console import info_line, is_quiet, stderr_console, stderr_is_terminal
from resnet_cli.engine.callbacks import BatchStats, Callback
from resnet_cli.io.history import EpochRecord

#: Plain-line progress prints at most this often (seconds), plus the final line.
PLAIN_INTERVAL = 5.0
#: Within an epoch, plain lines come this much less often than task lines: the epoch line is the main news.
WITHIN_EPOCH_INTERVAL = 6 * PLAIN_INTERVAL
#: Printed once when training starts, so the mark at the end of an epoch line is never a mystery.
LEGEND = "* = best validation loss so far; those weights are saved as best.pt"


@contextlib.contextmanager
def task_progress(description: str, quiet: bool = False) -> Iterator[Callable[[int, int], None]]:
    """Yield a ``progress(done, total)`` callback for one counted task."""
    if quiet or is_quiet():
        yield lambda done, total: None
        return
    if stderr_is_terminal():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=stderr_console(),
            transient=True,
        ) as bar:
            task = bar.add_task(description, total=None)

            def update(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            yield update
        return
    yield PlainProgress(description)


class PlainProgress:
    """``description done/total`` lines, throttled, for logs and pipes."""

    def __init__(self, description: str, interval: float = PLAIN_INTERVAL) -> None:
        self.description = description
        self.interval = interval
        self.last = time.monotonic()
        self.printed = False

    def __call__(self, done: int, total: int) -> None:
        # Quiet for quick tasks: the first line comes after `interval`; the final one only if others came.
        now = time.monotonic()
        if now - self.last >= self.interval or (done == total and total > 0 and self.printed):
            self.last = now
            self.printed = True
            info_line(f"{self.description}: {done}/{total}")


def format_duration(seconds: float) -> str:
    """``45s``, ``12m05s``, ``3h07m``: short enough for the end of a log line."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class _EpochClock:
    """Estimates the time left from the epochs finished in this process (a resumed run starts afresh)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.done = 0
        self.epochs = 0

    def epoch_finished(self, epoch: int) -> str:
        self.done += 1
        left = max(self.epochs - epoch, 0)
        if left == 0:
            return ""
        per_epoch = (time.monotonic() - self.started) / self.done
        return f"ETA {format_duration(per_epoch * left)}"


def format_epoch(record: EpochRecord, improved: bool, epochs: int = 0, eta: str = "") -> str:
    """One finished epoch: ``epoch 3/30  train loss ... val loss ...  lr ...  12.3s  ...  ETA 4m10s  *``."""
    parts = [
        # Padded to the width of "30/30" so the columns of a log line up.
        f"epoch {f'{record.epoch}/{epochs}':<{2 * len(str(epochs)) + 1}}" if epochs else f"epoch {record.epoch}",
        f"train loss {record.train_loss:.4f} acc {record.train_acc:6.2%}",
        f"val loss {record.val_loss:.4f} acc {record.val_acc:6.2%}",
    ]
    if record.ema_val_loss is not None and record.ema_val_acc is not None:
        parts.append(f"ema val loss {record.ema_val_loss:.4f} acc {record.ema_val_acc:6.2%}")
    if record.lr is not None:
        parts.append(f"lr {record.lr:.2g}")
    if record.epoch_time is not None:
        parts.append(f"{record.epoch_time:6.1f}s")
    if record.images_per_s is not None:
        parts.append(f"{record.images_per_s:7.1f} img/s")
    if eta:
        parts.append(eta)
    return "  ".join(parts) + ("  *" if improved else "")


def format_start(info: dict[str, Any]) -> str:
    model, pre = info["model"], info["preprocess"]
    stem = ", small-input stem" if model.get("small_input") else ""
    ranks = f", {info['world_size']} processes" if info.get("world_size", 1) > 1 else ""
    recipe = info.get("recipe")
    return (
        f"training {model['arch']} ({model['num_classes']} classes, {model['in_channels']} channel(s), "
        f"{pre['image_size']} px{stem}) on {info['train_images']} images, validating on {info['val_images']}; "
        f"{info['placement']}; workers {info['workers']}{ranks} -> {info['run_dir']}"
        + (f"\nrecipe: {recipe}" if recipe else "")
    )


class PlainTraining(Callback):
    """Outside a terminal: the start line and legend, one line per epoch (``epoch 3/30 ... ETA ...``), and a
    line every :data:`WITHIN_EPOCH_INTERVAL` seconds within long epochs (training steps, then validation)."""

    def __init__(self, interval: float = WITHIN_EPOCH_INTERVAL) -> None:
        self.interval = interval
        self.last = time.monotonic()
        self.clock = _EpochClock()

    def _due(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.interval:
            return False
        self.last = now
        return True

    def on_train_start(self, info: dict[str, Any]) -> None:
        self.clock = _EpochClock()
        self.clock.epochs = int(info.get("epochs") or 0)
        info_line(format_start(info))
        info_line(LEGEND)

    def on_message(self, text: str) -> None:
        info_line(text)

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.clock.epochs = epochs
        self.last = time.monotonic()

    def on_batch_end(self, epoch: int, stats: BatchStats) -> None:
        if stats.step < stats.steps and self._due():
            info_line(
                f"epoch {epoch}/{self.clock.epochs} step {stats.step}/{stats.steps}  loss {stats.loss:.4f} "
                f"acc {stats.accuracy:6.2%}  {stats.images_per_s:.1f} img/s"
            )

    def on_validation_start(self, epoch: int, steps: int) -> None:
        self.epoch = epoch

    def on_validation_step(self, step: int, steps: int) -> None:
        if step < steps and self._due():
            info_line(f"epoch {getattr(self, 'epoch', '?')}/{self.clock.epochs} validating {step}/{steps}")

    def on_epoch_end(self, record: EpochRecord, improved: bool) -> None:
        info_line(format_epoch(record, improved, self.clock.epochs, self.clock.epoch_finished(record.epoch)))


class RichTraining(Callback):
    """In a terminal: a live bar per epoch (training loss, accuracy and images/s while training; the validation
    batches while validating); finished epochs stay as lines."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = stderr_console()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.task: Any = None
        self.clock = _EpochClock()

    def _line(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def on_train_start(self, info: dict[str, Any]) -> None:
        self.clock = _EpochClock()
        self.clock.epochs = int(info.get("epochs") or 0)
        self._line(format_start(info))
        self._line(LEGEND)
        self.progress.start()

    def on_message(self, text: str) -> None:
        self._line(text)

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.clock.epochs = epochs
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"epoch {epoch}/{epochs}", total=steps, stats="")

    def on_batch_end(self, epoch: int, stats: BatchStats) -> None:
        text = f"loss {stats.loss:.4f} acc {stats.accuracy:6.2%} {stats.images_per_s:.0f} img/s"
        self.progress.update(self.task, completed=stats.step, stats=text)

    def on_validation_start(self, epoch: int, steps: int) -> None:
        # The training figures would read as validation figures here: show the validation batches instead.
        self.progress.reset(self.task, description=f"epoch {epoch}/{self.clock.epochs} validating", total=steps)
        self.progress.update(self.task, stats="")

    def on_validation_step(self, step: int, steps: int) -> None:
        self.progress.update(self.task, completed=step)

    def on_epoch_end(self, record: EpochRecord, improved: bool) -> None:
        self._line(format_epoch(record, improved, self.clock.epochs, self.clock.epoch_finished(record.epoch)))

    def on_train_end(self, result: Any) -> None:
        self.close()

    def close(self) -> None:
        self.progress.stop()


def training_callback(quiet: bool = False) -> Callback:
    """The training progress callback for this terminal: rich bar, plain lines, or nothing under --quiet."""
    if quiet or is_quiet():
        return Callback()
    return RichTraining() if stderr_is_terminal() else PlainTraining()

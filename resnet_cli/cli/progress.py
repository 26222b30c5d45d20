"""Progress on stderr: a rich bar in a terminal, plain lines at a sensible rate elsewhere, nothing with --quiet."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from resnet_cli.cli.console import info_line, stderr_console, stderr_is_terminal

#: Plain-line progress prints at most this often (seconds), plus the final line.
PLAIN_INTERVAL = 5.0


@contextlib.contextmanager
def task_progress(description: str, quiet: bool = False) -> Iterator[Callable[[int, int], None]]:
    """Yield a ``progress(done, total)`` callback for one counted task."""
    if quiet:
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


def _fmt_epoch(record, improved: bool) -> str:
    best = "  *" if improved else ""
    return (
        f"epoch {record.epoch:>3}  train loss {record.train_loss:.4f} acc {record.train_acc:6.2%}  "
        f"val loss {record.val_loss:.4f} acc {record.val_acc:6.2%}  lr {record.lr:.2g}  "
        f"{record.epoch_time:6.1f}s  {record.images_per_s:7.1f} img/s{best}"
    )


def _fmt_start(info: dict) -> str:
    model, pre = info["model"], info["preprocess"]
    stem = ", small-input stem" if model["small_input"] else ""
    ranks = f", {info['world_size']} processes" if info["world_size"] > 1 else ""
    return (
        f"training {model['arch']} ({model['num_classes']} classes, {model['in_channels']} channel(s), "
        f"{pre['image_size']} px{stem}) on {info['train_images']} images, validating on {info['val_images']}; "
        f"{info['placement']}; workers {info['workers']}{ranks} -> {info['run_dir']}"
    )


def training_callback(quiet: bool = False):
    """The training progress callback for this terminal (imports the core's Callback lazily)."""
    from resnet_cli.engine.callbacks import Callback

    class PlainTraining(Callback):
        """One line per epoch, and a few within epochs longer than the plain interval."""

        def __init__(self) -> None:
            self.last = time.monotonic()

        def on_train_start(self, info: dict) -> None:
            info_line(_fmt_start(info))

        def on_message(self, text: str) -> None:
            info_line(text)

        def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
            self.epochs = epochs
            self.last = time.monotonic()

        def on_batch_end(self, epoch: int, stats) -> None:
            now = time.monotonic()
            if now - self.last >= 6 * PLAIN_INTERVAL and stats.step < stats.steps:
                self.last = now
                info_line(
                    f"epoch {epoch} step {stats.step}/{stats.steps}  loss {stats.loss:.4f} "
                    f"acc {stats.accuracy:6.2%}  {stats.images_per_s:.1f} img/s"
                )

        def on_epoch_end(self, record, improved: bool) -> None:
            info_line(_fmt_epoch(record, improved))

    class RichTraining(Callback):
        """A live bar per epoch with loss, accuracy and images/s; finished epochs stay as lines."""

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
            self.task = None

        def on_train_start(self, info: dict) -> None:
            self.console.print(_fmt_start(info), highlight=False, markup=False)
            self.progress.start()

        def on_message(self, text: str) -> None:
            self.console.print(text, highlight=False, markup=False)

        def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(f"epoch {epoch}/{epochs}", total=steps, stats="")

        def on_batch_end(self, epoch: int, stats) -> None:
            text = f"loss {stats.loss:.4f} acc {stats.accuracy:6.2%} {stats.images_per_s:.0f} img/s"
            self.progress.update(self.task, completed=stats.step, stats=text)

        def on_validation_start(self, epoch: int, steps: int) -> None:
            self.progress.update(self.task, description=f"validating {epoch}", completed=0, total=steps)

        def on_validation_step(self, step: int, steps: int) -> None:
            self.progress.update(self.task, completed=step)

        def on_epoch_end(self, record, improved: bool) -> None:
            self.console.print(_fmt_epoch(record, improved), highlight=False, markup=False)

        def on_train_end(self, result) -> None:
            self.close()

        def close(self) -> None:
            self.progress.stop()

    if quiet:
        return Callback()
    return RichTraining() if stderr_is_terminal() else PlainTraining()

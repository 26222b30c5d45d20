"""Progress on stderr: a rich bar in a terminal, plain lines at a sensible rate elsewhere, nothing with --quiet."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator

from resnet_cli.cli.console import stderr_console, stderr_is_terminal

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
            sys.stderr.write(f"{self.description}: {done}/{total}\n")
            sys.stderr.flush()

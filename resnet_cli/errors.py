"""Domain errors. Each carries one actionable line and the exit code the CLI turns it into.

The contract: 2 for bad usage or bad input, 1 for failures at run time, 130/143 for a run stopped by
SIGINT/SIGTERM after writing a resumable checkpoint.
"""

from __future__ import annotations

import contextvars
import re

#: Who is asking: "cli" (set by the ``resnet`` command) or "api" (Python callers, the default). Messages name
#: the command-line flags for the former and the keyword arguments for the latter.
SURFACE: contextvars.ContextVar[str] = contextvars.ContextVar("resnet_cli_surface", default="api")

_SWITCHES = {"force", "resume", "quiet", "json", "compile", "hflip", "dedupe", "skip-bad", "drop-small", "small-input",
             "temperature", "print-commands", "cache-images"}  # fmt: skip
_FLAG = re.compile(r"--([a-z][a-z0-9-]*)")


def api_wording(message: str) -> str:
    """``message`` with command-line flags spoken as Python arguments (``--force`` -> ``force=True``,
    ``--batch-size 32`` -> ``batch_size 32``), leaving quoted commands (``'resnet split data --val 0.2'``) alone."""
    parts = message.split("'")
    for i in range(0, len(parts), 2):  # outside single quotes
        parts[i] = _FLAG.sub(
            lambda m: m.group(1).replace("-", "_") + ("=True" if m.group(1) in _SWITCHES else ""), parts[i]
        )
    return "'".join(parts)


class ResnetError(Exception):
    """Base class: a problem the user can fix, described in one line."""

    exit_code: int = 2

    def __str__(self) -> str:
        text = super().__str__()
        return text if SURFACE.get() == "cli" else api_wording(text)


class ConfigError(ResnetError):
    """An option value that is invalid or impossible (``--arch 35``, ``--image-size 0``)."""


class DatasetError(ResnetError):
    """A data folder, image or manifest that cannot be used."""


class SplitError(ResnetError):
    """The data cannot be split as asked (too few images, bad fractions)."""


class CheckpointError(ResnetError):
    """A checkpoint or weights file that is missing, corrupt, hostile or does not match."""


class DeviceError(ResnetError):
    """A requested device that does not exist on this machine."""


class OutputExistsError(ResnetError):
    """An earlier result would be overwritten; the user must pass ``--force``."""


class RunBusyError(ResnetError):
    """A run folder is held by another live resnet process (the lock names it)."""


class RunFailedError(ResnetError):
    """The work failed at run time (non-finite loss, I/O error, out of memory)."""

    exit_code = 1


class Interrupted(ResnetError):
    """Training stopped by a signal after writing a resumable checkpoint."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

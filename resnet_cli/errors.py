"""Domain errors. Each carries one actionable line and the exit code the CLI turns it into.

The contract: 2 for bad usage or bad input, 1 for failures at run time, 130/143 for a run stopped by
SIGINT/SIGTERM after writing a resumable checkpoint.
"""

from __future__ import annotations


class ResnetError(Exception):
    """Base class: a problem the user can fix, described in one line."""

    exit_code: int = 2


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

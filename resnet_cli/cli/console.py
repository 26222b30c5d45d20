"""Output streams: results on stdout, everything else (progress, warnings, errors) on stderr.

Consoles are created per call so they follow the current ``sys.stdout``/``sys.stderr`` (tests swap them).
rich honours ``NO_COLOR`` itself; outside a terminal it writes no colour codes.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console


def stdout_console() -> Console:
    """Console for results. Outside a terminal tables get a fixed, generous width instead of 80 columns."""
    return Console(file=sys.stdout, highlight=False, width=None if sys.stdout.isatty() else 160)


def report_console() -> Console:
    """Console for the table of a command that creates a file or folder.

    In a terminal the table goes to stdout, before the path. Otherwise it goes to stderr, so that stdout
    holds only the path and ``RUN=$(resnet train ...)`` captures exactly the run folder; ``--json`` is the
    way to get the full result on stdout in scripts.
    """
    return stdout_console() if sys.stdout.isatty() else stderr_console()


def stderr_console() -> Console:
    """Console for progress and messages."""
    return Console(file=sys.stderr, highlight=False, width=None if sys.stderr.isatty() else 160)


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def print_json(document: Any) -> None:
    """Exactly one JSON document on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_path(path: object) -> None:
    """The file or folder a command produced: always the last line on stdout, plain, for ``$(...)``."""
    sys.stdout.write(f"{path}\n")
    sys.stdout.flush()


def error_line(message: str) -> None:
    """One line on stderr, never wrapped (scripts grep it)."""
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    sys.stderr.flush()


def warning_line(message: str, quiet: bool = False) -> None:
    if not quiet:
        sys.stderr.write(f"warning: {' '.join(str(message).split())}\n")
        sys.stderr.flush()


def info_line(message: str, quiet: bool = False) -> None:
    if not quiet:
        sys.stderr.write(f"{message}\n")
        sys.stderr.flush()

"""Output streams: results on stdout, everything else (progress, warnings, errors) on stderr.

Consoles are created per call so they follow the current ``sys.stdout``/``sys.stderr`` (tests swap them).
rich honours ``NO_COLOR`` itself; outside a terminal it writes no colour codes.

``--quiet`` is one process-wide state, set before each command runs (the command class in ``app.py`` sets it
from the command's ``quiet`` parameter; :func:`set_quiet` sets it explicitly). Under it stderr carries only
errors and warnings: :func:`info_line`, :func:`stderr_console` and the stderr side of :func:`report_console`
print nothing. Results on stdout (the path, the JSON document, the result table in a terminal) are never
suppressed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

_quiet = False


class PipeClosed(BaseException):
    """The reader of stdout or stderr went away (``resnet ... | head``).

    A BaseException, so that no handler on the way reports it as an error; ``main`` ends the process as
    SIGPIPE would.
    """


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich's own reaction is SystemExit(1), indistinguishable from a failure: hand it to the boundary.
        if not self.quiet:
            raise PipeClosed


def set_quiet(flag: bool) -> None:
    """Set ``--quiet`` for the rest of this command: errors and warnings only on stderr."""
    global _quiet
    _quiet = bool(flag)


def is_quiet() -> bool:
    return _quiet


def stdout_console() -> Console:
    """Console for results. Outside a terminal tables get a fixed, generous width instead of 80 columns."""
    return _Console(file=sys.stdout, highlight=False, width=None if sys.stdout.isatty() else 160)


def report_console() -> Console:
    """Console for the table of a command that creates a file or folder.

    In a terminal the table goes to stdout, before the path (even under ``--quiet``: it is the result).
    Otherwise it goes to stderr, so that stdout holds only the path and ``RUN=$(resnet train ...)`` captures
    exactly the run folder; there it is information, so ``--quiet`` drops it. ``--json`` is the way to get
    the full result on stdout in scripts.
    """
    return stdout_console() if sys.stdout.isatty() else stderr_console()


def stderr_console() -> Console:
    """Console for progress and informational messages (silent under ``--quiet``; warnings use
    :func:`warning_line`)."""
    return _Console(file=sys.stderr, highlight=False, width=None if sys.stderr.isatty() else 160, quiet=_quiet)


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def json_text(document: Any) -> str:
    """``document`` as indented JSON, readable UTF-8 where stdout can hold it, ``\\u`` escapes where it cannot
    (``LANG=C``, ``PYTHONIOENCODING=ascii``): both parse to the same document."""
    text = json.dumps(document, indent=2, ensure_ascii=False)
    try:
        text.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        text = json.dumps(document, indent=2, ensure_ascii=True)
    return text


def print_json(document: Any) -> None:
    """Exactly one JSON document on stdout."""
    sys.stdout.write(json_text(document) + "\n")
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
    """One ``warning:`` line on stderr, shown under ``--quiet`` too (the contract: errors and warnings only).

    ``quiet`` is accepted for older callers and ignored.
    """
    del quiet
    sys.stderr.write(f"warning: {' '.join(str(message).split())}\n")
    sys.stderr.flush()


def info_line(message: str, quiet: bool = False) -> None:
    """An informational line on stderr; nothing under ``--quiet`` (or when ``quiet`` is passed)."""
    if not (quiet or _quiet):
        sys.stderr.write(f"{message}\n")
        sys.stderr.flush()

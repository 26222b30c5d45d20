"""The ``resnet`` application: command registration, the output streams, and the single error boundary.

Domain errors (:class:`resnet_cli.errors.ResnetError`) and usage errors become one line on stderr and
the contract's exit code; running out of memory becomes one line of advice and exit 1; anything unexpected
becomes one line and exit 1. ``RESNET_DEBUG=1`` re-raises so the full traceback shows. A reader that closes
the pipe (``resnet ... | head``) ends the command silently by SIGPIPE, as it would a standard Unix tool.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from resnet_cli import __version__
from resnet_cli.cli import console
from resnet_cli.cli.console import PipeClosed
from resnet_cli.errors import SURFACE, Interrupted, ResnetError

try:  # typer >= 0.2x vendors click; older releases depend on it
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import UsageError  # type: ignore[no-redef]


def _debug() -> bool:
    return os.environ.get("RESNET_DEBUG", "") not in ("", "0")


def _hide_flag_types(params: list[Any]) -> None:
    # This typer's rich help prints every option's value type, flags included (`--force <bool>`), although a
    # flag takes no value; click's plain help skips flags. An empty metavar is printed as nothing.
    for param in params:
        if getattr(param, "is_flag", False) and getattr(param, "metavar", "") is None:
            param.metavar = ""


class _Command(TyperCommand):
    """Every command: flags show no value type in ``--help``, and ``--quiet`` is set process-wide before it runs."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _format_help(super().format_help, ctx, formatter)

    def invoke(self, ctx: Any) -> Any:
        console.set_quiet(bool(ctx.params.get("quiet", False)))
        return super().invoke(ctx)


class _Group(TyperGroup):
    """Typer group whose ``invoke`` is the error boundary for every command (CliRunner included)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _format_help(super().format_help, ctx, formatter)

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        # `resnet --help | head -1`: the group's own help is written while parsing, before `invoke`.
        try:
            return super().make_context(*args, **kwargs)
        except BrokenPipeError:
            if _reader_gone():
                raise PipeClosed from None
            raise

    def invoke(self, ctx: Any) -> Any:
        console.set_quiet(False)
        surface = SURFACE.set("cli")  # errors name the flags, not the Python arguments
        try:
            return self._invoke_reporting_errors(ctx)
        except BrokenPipeError:  # raised while reporting an error to a closed stderr
            if _reader_gone():
                raise PipeClosed from None
            raise
        finally:
            SURFACE.reset(surface)

    def _invoke_reporting_errors(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Interrupted as exc:
            console.info_line(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except ResnetError as exc:
            if _debug():
                raise
            console.error_line(_without_worker_traceback(str(exc)))
            raise typer.Exit(exc.exit_code) from None
        except UsageError as exc:
            if _debug():
                raise
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            if where == ctx.command_path and ctx.invoked_subcommand:  # an option the command's parser refused
                where = f"{where} {ctx.invoked_subcommand}"
            console.error_line(f"{exc.format_message()} (see '{where} --help')")
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt, PipeClosed):
            raise
        except Exception as exc:
            if isinstance(exc, BrokenPipeError) and _reader_gone():  # not, say, a worker process's pipe
                raise PipeClosed from None
            if _debug() or type(exc).__name__ in ("Exit", "Abort"):
                raise
            memory = _out_of_memory(exc)
            if memory is not None:
                console.error_line(f"out of {memory}: try a smaller --batch-size (or --image-size)")
            else:
                console.error_line(f"{type(exc).__name__}: {exc} (run again with RESNET_DEBUG=1 for the traceback)")
            raise typer.Exit(1) from None


def _format_help(format_help: Any, ctx: Any, formatter: Any) -> None:
    _hide_flag_types(ctx.command.get_params(ctx))
    try:
        format_help(ctx, formatter)
    except SystemExit:
        # typer prints help through its own rich console, whose answer to a closed pipe is SystemExit(1);
        # writing help raises nothing else.
        raise PipeClosed from None


def _out_of_memory(exc: BaseException) -> str | None:
    """What ran out, when ``exc`` is an allocation failure (Python's, torch's on an accelerator or on the CPU)."""
    if isinstance(exc, MemoryError):
        return "memory"
    torch = sys.modules.get("torch")  # never import torch here: an error in `--help` must not cost seconds
    accelerator_oom = getattr(torch, "OutOfMemoryError", None) or getattr(
        getattr(torch, "cuda", None), "OutOfMemoryError", None
    )
    if accelerator_oom is not None and isinstance(exc, accelerator_oom):
        return "GPU memory"
    if isinstance(exc, RuntimeError):
        text = str(exc).lstrip()
        if text.startswith("DefaultCPUAllocator: can't allocate memory") or (
            text.startswith("[enforce fail") and "memory" in text
        ):
            return "memory"
    return None


def _without_worker_traceback(message: str) -> str:
    """A DataLoader worker's error arrives with the worker's traceback prepended: keep the last line."""
    if "Original Traceback" not in message:
        return message
    last = [line for line in message.strip().splitlines() if line.strip()][-1]
    kind, _, text = last.partition(": ")
    return text if kind.endswith("Error") and text else last


class _Typer(typer.Typer):
    """Typer whose commands default to :class:`_Command`."""

    def command(self, *args: Any, cls: type[TyperCommand] | None = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or _Command, **kwargs)


app = _Typer(
    name="resnet",
    cls=_Group,
    help="Train, evaluate and compare from-scratch ResNets on any ImageFolder dataset.",
    epilog="Quick start: resnet sample-data data && resnet split data --val 0.2 && resnet train --arch 34",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"resnet-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Train, evaluate and compare from-scratch ResNets on any ImageFolder dataset."""


def _register() -> None:
    # Command modules import only typer and the standard library at module level; torch is imported
    # inside each command, so `resnet --help` stays instant.
    from resnet_cli.cli import bench, export, plot, predict, sample_data, split, study, summary, train
    from resnet_cli.cli import eval as eval_command

    for module in (sample_data, split, train, eval_command, plot, summary, bench, export, predict, study):
        module.register(app)


_register()


# -- the process around the app --------------------------------------------------------------------------------


def _reader_gone(streams: tuple[Any, ...] | None = None) -> bool:
    """Whether stdout or stderr is a pipe (or socket) whose reader has closed it.

    A ``BrokenPipeError`` can also come from a worker process's pipe; only a closed output stream means
    "the user's ``head`` has had enough". ``poll`` reports POLLERR on the write end of a reader-less pipe.
    """
    import select

    for stream in streams or (sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            continue
        with contextlib.suppress(OSError, ValueError, AttributeError):
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            if any(events & select.POLLERR for _, events in poller.poll(0)):
                return True
    return False


def _end_as_sigpipe() -> NoReturn:
    """End silently, as a C tool writing to a closed pipe does: killed by SIGPIPE (the shell shows 141)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        # The interpreter flushes both streams on the way out: give the closed ones somewhere to go.
        with contextlib.suppress(AttributeError, OSError, ValueError):
            if _reader_gone((stream,)):
                os.dup2(devnull, stream.fileno())
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGPIPE)
    sys.exit(141)  # pragma: no cover (where the signal cannot be delivered)


def _tolerant_streams() -> None:
    # Under LANG=C or PYTHONIOENCODING=ascii (cron, CI) a class name or path the stream cannot encode would
    # raise UnicodeEncodeError mid-output: write it as a backslash escape instead. JSON uses \u escapes there
    # (console.json_text), so it stays valid JSON.
    for stream in (sys.stdout, sys.stderr):
        # Duck-typed: sys.stdout is typed TextIO, but a TextIOWrapper (or a wrapper that proxies one) has it.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace")


def main() -> None:
    """Console-script entry point."""
    _tolerant_streams()
    try:
        app(prog_name="resnet")
    except PipeClosed:
        _end_as_sigpipe()
    except SystemExit:
        # Output still buffered is written when the interpreter exits, after any handler: flush it here, where
        # a reader that has gone can still end the process the Unix way.
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _end_as_sigpipe()
        raise

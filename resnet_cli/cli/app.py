"""The ``resnet`` application: command registration and the single error boundary.

Domain errors (:class:`resnet_cli.errors.ResnetError`) and usage errors become one line on stderr and
the contract's exit code; anything unexpected becomes one line and exit 1. ``RESNET_DEBUG=1`` re-raises
so the full traceback shows.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from resnet_cli import __version__
from resnet_cli.cli import console
from resnet_cli.errors import Interrupted, ResnetError

try:  # typer >= 0.2x vendors click; older releases depend on it
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import UsageError  # type: ignore[no-redef]


def _debug() -> bool:
    return os.environ.get("RESNET_DEBUG", "") not in ("", "0")


class _Group(TyperGroup):
    """Typer group whose ``invoke`` is the error boundary for every command (CliRunner included)."""

    def invoke(self, ctx: Any) -> Any:
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
            where = exc.ctx.command_path if exc.ctx is not None else "resnet"
            console.error_line(f"{exc.format_message()} (see '{where} --help')")
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except MemoryError:
            if _debug():
                raise
            console.error_line("out of memory: try a smaller --batch-size or --image-size")
            raise typer.Exit(1) from None
        except Exception as exc:
            if _debug() or type(exc).__name__ in ("Exit", "Abort"):
                raise
            console.error_line(f"{type(exc).__name__}: {exc} (run again with RESNET_DEBUG=1 for the traceback)")
            raise typer.Exit(1) from None


def _without_worker_traceback(message: str) -> str:
    """A DataLoader worker's error arrives with the worker's traceback prepended: keep the last line."""
    if "Original Traceback" not in message:
        return message
    last = [line for line in message.strip().splitlines() if line.strip()][-1]
    kind, _, text = last.partition(": ")
    return text if kind.endswith("Error") and text else last


app = typer.Typer(
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
    from resnet_cli.cli import eval as eval_command
    from resnet_cli.cli import export, plot, predict, sample_data, split, summary, train

    for module in (sample_data, split, train, eval_command, plot, summary, export, predict):
        module.register(app)


_register()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="resnet")

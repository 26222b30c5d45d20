"""Options shared by several commands, declared once as ``Annotated`` aliases."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Annotated, Any

import typer

from resnet_cli.config import WORKERS_HELP


def complete_from(*choices: str) -> Callable[[str], list[str]]:
    """A shell-completion function offering ``choices`` that start with what was typed so far."""

    def complete(incomplete: str) -> list[str]:
        return [c for c in choices if c.startswith(incomplete)]

    return complete


def field_option(config: type, name: str, **cli: Any) -> Any:
    """The ``typer.Option`` that the dataclass field ``config.name`` declares: its help, and its flag and short
    alias (``--field-name`` unless the field names another). ``cli`` adds what only the command line has, such
    as shell completion. The default stays the parameter's own (``= DEFAULTS.name``), so it shows in the
    signature; tests/test_config.py checks that it is the field's.
    """
    spec = next(f for f in dataclasses.fields(config) if f.name == name)
    decls = [spec.metadata.get("flag", "--" + name.replace("_", "-"))]
    if "short" in spec.metadata:
        decls.append(spec.metadata["short"])
    if spec.default is None or spec.default == ():  # automatic: the help says what it resolves to
        cli.setdefault("show_default", False)
    return typer.Option(*decls, help=spec.metadata["help"], **cli)


ARCH_CHOICES = (
    "18", "34", "50", "101", "152", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    *(f"vit-{size}/{patch}" for size in ("ti", "s", "b", "l") for patch in (2, 4, 8, 16, 32)),
)  # fmt: skip
AUGMENT_CHOICES = ("rrc", "crop", "none", "randaugment", "trivialaugment", "autoaugment")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
PART_CHOICES = ("test", "val", "train")

Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="Errors and warnings only on stderr: no progress or information.")
]
Json = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout instead of a table.")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite earlier output.")]
Arch = Annotated[
    str,
    typer.Option(
        "--arch",
        "-a",
        help="18, 34, 50, 101, 152, or a ViT such as vit-s/16 ('resnet summary --list').",
        autocompletion=complete_from(*ARCH_CHOICES),
    ),
]
UseEma = Annotated[
    bool,
    typer.Option("--ema/--no-ema", help="Use the run's moving average of the weights, when it kept one (train --ema)."),
]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Images per batch.")]
InferencePrecision = Annotated[
    str,
    typer.Option(
        "--precision", help="auto (as trained), fp32, bf16 or fp16.", autocompletion=complete_from(*PRECISION_CHOICES)
    ),
]
#: One meaning of ``--workers`` on every command (train, eval, split); the policy is resnet_cli.config.resolve_workers.
Workers = Annotated[int | None, typer.Option("--workers", "-j", help=WORKERS_HELP, show_default=False)]

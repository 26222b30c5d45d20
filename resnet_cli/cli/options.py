"""Options shared by several commands, declared once as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

import typer

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or informational messages on stderr.")]
Json = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout instead of a table.")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite earlier output.")]
Arch = Annotated[str, typer.Option("--arch", "-a", help="18, 34, 50, 101 or 152 (or resnet34-style names).")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Images per batch.")]
InferencePrecision = Annotated[str, typer.Option("--precision", help="auto (as trained), fp32, bf16 or fp16.")]

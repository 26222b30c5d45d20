"""The core never imports typer or rich; the CLI imports torch lazily."""

from __future__ import annotations

import subprocess
import sys

CORE_MODULES = [
    "resnet_cli",
    "resnet_cli.config",
    "resnet_cli.errors",
    "resnet_cli.models",
    "resnet_cli.models.summary",
]


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {name.split(".")[0] for name in out.split()}


def test_core_imports_neither_typer_nor_rich():
    loaded = _loaded_after("\n".join(f"import {m}" for m in CORE_MODULES))
    assert "torch" in loaded  # the import really happened
    assert not {"typer", "rich", "click"} & loaded


def test_cli_help_does_not_import_torch():
    loaded = _loaded_after("import resnet_cli.cli.app")
    assert "typer" in loaded
    assert "torch" not in loaded

"""The core never imports typer or rich; the CLI imports torch lazily."""

from __future__ import annotations

import subprocess
import sys


def _core_modules() -> list[str]:
    """Every module of the package outside resnet_cli.cli."""
    import pkgutil

    import resnet_cli

    names = [m.name for m in pkgutil.walk_packages(resnet_cli.__path__, "resnet_cli.")]
    return ["resnet_cli", *(n for n in names if not n.startswith("resnet_cli.cli") and n != "resnet_cli.__main__")]


CORE_MODULES = _core_modules()


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {name.split(".")[0] for name in out.split()}


def test_core_imports_neither_typer_nor_rich():
    assert len(CORE_MODULES) > 20 and "resnet_cli.engine.train" in CORE_MODULES
    loaded = _loaded_after("\n".join(f"import {m}" for m in CORE_MODULES))
    assert "torch" in loaded  # the import really happened
    assert not {"typer", "rich", "click"} & loaded


def test_cli_help_does_not_import_torch():
    loaded = _loaded_after("import resnet_cli.cli.app")
    assert "typer" in loaded
    assert "torch" not in loaded

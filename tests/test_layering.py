"""The core never imports typer or rich; the CLI imports torch lazily."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


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


# The layers, top to bottom: a module may import its own layer and any layer below, never one above.
# cli -> engine, viz -> io -> data -> models -> config, errors, fs (STYLE.md).
LAYERS: dict[str, int] = {
    "resnet_cli.cli": 5,
    "resnet_cli.engine": 4,
    "resnet_cli.viz": 4,
    "resnet_cli.viz_study": 4,
    "resnet_cli.io": 3,
    "resnet_cli.data": 2,
    "resnet_cli.models": 1,
    "resnet_cli.config": 0,
    "resnet_cli.errors": 0,
    "resnet_cli.fs": 0,
}
#: The package root (``__version__``) and the ``python -m`` entry point stand outside the layers.
EXEMPT = {"resnet_cli", "resnet_cli.__main__"}
PACKAGE = Path(__file__).resolve().parents[1] / "resnet_cli"


def _layer_of(module: str) -> str | None:
    """The entry of LAYERS that ``module`` belongs to (longest matching prefix), or None for the exempt ones."""
    if module in EXEMPT:
        return None
    for name in sorted(LAYERS, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in tests/test_layering.py")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of the package in ``path``, module-level or deferred inside a function,
    relative imports resolved; ``from resnet_cli.x import y`` counts as ``resnet_cli.x.y`` when y is a module."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").is_file() or (
                    PACKAGE.parent / Path(*sub.split("."))
                ).is_dir()
                found.append((node.lineno, sub if is_module else base))
    return [(line, name) for line, name in found if name == "resnet_cli" or name.startswith("resnet_cli.")]


def _upward_imports() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        own = _layer_of(module)
        if own is None:
            continue
        for line, target in _imported_modules(path):
            other = _layer_of(target)
            if other is not None and LAYERS[other] > LAYERS[own]:
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {own} imports {target} (a higher layer)")
    return problems


def test_no_module_imports_a_higher_layer():
    assert _upward_imports() == []


def test_io_reads_files_and_decodes_no_images():
    # Running a network on decoded images (export's parity check) is an engine operation, not a file format.
    decoding = (
        "resnet_cli.data.dataset",
        "resnet_cli.data.decode",
        "resnet_cli.data.images",
        "resnet_cli.data.transforms",
    )
    found = [
        f"{path.name}:{line}: {target}"
        for path in sorted((PACKAGE / "io").glob("*.py"))
        for line, target in _imported_modules(path)
        if target.startswith(decoding)
    ]
    assert found == []


def test_every_module_belongs_to_a_layer():
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    assert {"resnet_cli.io.weights", "resnet_cli.engine.export", "resnet_cli.models.resnet"} <= modules
    for module in modules:
        _layer_of(module)  # raises for a module no layer claims


def test_the_layer_check_sees_deferred_and_relative_imports(tmp_path, monkeypatch):
    # A data module importing io inside a function, and a models module importing data relatively: both point up.
    fake = tmp_path / "resnet_cli"
    (fake / "data").mkdir(parents=True)
    (fake / "models").mkdir()
    (fake / "io").mkdir()
    for folder in (fake, fake / "data", fake / "models", fake / "io"):
        (folder / "__init__.py").write_text("")
    (fake / "io" / "weights.py").write_text("")
    (fake / "data" / "locate.py").write_text("def f():\n    from resnet_cli.io import weights\n")
    (fake / "models" / "resnet.py").write_text("from ..data import locate\nfrom resnet_cli import __version__\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert _upward_imports() == [
        "resnet_cli/data/locate.py:2: resnet_cli.data imports resnet_cli.io.weights (a higher layer)",
        "resnet_cli/models/resnet.py:1: resnet_cli.models imports resnet_cli.data.locate (a higher layer)",
    ]

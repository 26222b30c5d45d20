"""``resnet split``: scan, verify and stratify a folder into a seeded manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from resnet_cli.cli import console
from resnet_cli.cli.options import Force, Json, Quiet, Workers
from resnet_cli.cli.progress import task_progress


def split(
    data_dir: Annotated[
        Path, typer.Argument(metavar="DATA_DIR", help="ImageFolder root: `DATA_DIR/CLASS/IMAGE`.", show_default=False)
    ],
    val: Annotated[
        float | None,
        typer.Option("--val", help="Fraction of each class for validation [default: 0.2].", show_default=False),
    ] = None,
    test: Annotated[
        float | None,
        typer.Option(
            "--test", help="Fraction of each class held out for testing (0: none) [default: 0].", show_default=False
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split.")] = 42,
    skip_bad: Annotated[
        bool,
        typer.Option("--skip-bad", help="Leave unreadable images out (recorded in the manifest) instead of failing."),
    ] = False,
    dedupe: Annotated[
        bool, typer.Option("--dedupe", help="Keep one file of each group of byte-identical files.")
    ] = False,
    drop_small: Annotated[
        bool, typer.Option("--drop-small", help="Leave out classes too small to have an image in every part.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Manifest path [default: DATA_DIR/manifest.csv].", show_default=False),
    ] = None,
    from_folders: Annotated[
        bool,
        typer.Option(
            "--from-folders",
            help="Keep the split of a `DATA_DIR/train|val|test/CLASS/IMAGE` dataset (val may be named valid or "
            "validation; test is optional) instead of splitting afresh.",
        ),
    ] = False,
    max_pixels: Annotated[
        int | None,
        typer.Option(
            "--max-pixels",
            help="Treat images with more pixels (width x height) as unreadable [default: Pillow's limit, 89,478,485].",
            show_default=False,
        ),
    ] = None,
    workers: Workers = None,
    force: Force = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Check every image by decoding it and write a seeded, stratified train/val(/test) manifest.

    The manifest (CSV, with a JSON sidecar) lands in DATA_DIR, where train and eval find it.
    """
    from resnet_cli.config import SplitConfig
    from resnet_cli.data.split import make_split
    from resnet_cli.errors import ConfigError

    if from_folders and (val is not None or test is not None):
        given = " and ".join(f for f, v in (("--val", val), ("--test", test)) if v is not None)
        raise ConfigError(f"{given} cannot be used with --from-folders, which keeps the parts the folders make")
    if max_pixels is not None and max_pixels < 1:
        raise ConfigError(f"--max-pixels must be at least 1, got {max_pixels}")
    config = SplitConfig(
        val=0.2 if val is None else val,
        test=0.0 if test is None else test,
        seed=seed,
        skip_bad=skip_bad,
        dedupe=dedupe,
        drop_small=drop_small,
        out=str(out) if out else None,
        force=force,
        workers=workers,
    )
    with task_progress("verifying images", quiet or json_out) as progress:
        result = make_split(data_dir, config, progress=progress, max_pixels=max_pixels, from_folders=from_folders)
    # --quiet keeps warnings: it means errors and warnings only.
    for message in result.warnings:
        console.warning_line(message)
    if result.excluded:
        console.warning_line(f"left out {len(result.excluded)} file(s); see {result.sidecar}")
    if json_out:
        console.print_json(result.to_dict())
        return
    _render(result.to_dict())  # report_console applies --quiet (the table stays in a terminal: it is the result)
    console.print_path(result.manifest.path)


def _render(doc: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    parts = ["train", "val"] + (["test"] if doc["totals"]["test"] > 0 else [])
    how = "as its folders split it" if doc.get("source") == "folders" else f"seed {doc['seed']}"
    table = Table(title=f"split of {escape(doc['root'])} ({how})", title_justify="left")
    table.add_column("class")
    for part in parts:
        table.add_column(part, justify="right")
    table.add_column("total", justify="right")
    for name, counts in doc["counts"].items():
        table.add_row(escape(name), *(str(counts[p]) for p in parts), str(sum(counts.values())))
    table.add_section()
    totals = doc["totals"]
    table.add_row("total", *(str(totals[p]) for p in parts), str(sum(totals.values())))
    out = console.report_console()
    out.print(table)
    out.print(f"{len(doc['classes'])} classes; largest/smallest class ratio {doc['imbalance']}")


def register(app: typer.Typer) -> None:
    app.command(
        epilog="Examples:\n\n"
        "- `resnet split data --val 0.2`\n"
        "- `resnet split data --val 0.15 --test 0.15 --seed 0 --json`\n"
        "- `resnet split data --from-folders` (data/train/CLASS, data/val/CLASS)",
    )(split)

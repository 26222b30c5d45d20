"""``resnet sample-data``: the bundled handwritten digits as an ImageFolder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from resnet_cli.cli import console
from resnet_cli.cli.options import Force, Json, Quiet


def sample_data(
    dest: Annotated[Path, typer.Argument(metavar="DEST", help="Folder to create, e.g. data.", show_default=False)],
    per_class: Annotated[
        int | None, typer.Option("--per-class", help="Keep only the first N images of each class.", show_default=False)
    ] = None,
    force: Force = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Write scikit-learn's 1,797 scanned handwritten digits (8x8, 10 classes) as PNGs in `DEST/CLASS/`.

    Nothing is downloaded: the images ship inside scikit-learn.
    """
    from resnet_cli.data.sample import write_digits

    result = write_digits(dest, force=force, per_class=per_class)
    if json_out:
        console.print_json(result.to_dict())
        return
    console.info_line(f"wrote {result.images} images in {len(result.classes)} classes", quiet)
    console.print_path(result.dest)


def register(app: typer.Typer) -> None:
    app.command(
        "sample-data",
        epilog="Examples:\n\n"
        "- `resnet sample-data data && resnet split data --val 0.2` (the quick start)\n"
        "- `resnet sample-data tiny --per-class 20` (200 images, for smoke tests)",
    )(sample_data)

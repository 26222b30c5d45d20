"""``resnet sample-data``: a real image dataset already on this machine as an ImageFolder (digits, Fashion-MNIST)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from resnet_cli.cli import console
from resnet_cli.cli.options import Force, Json, Quiet, Workers, complete_from
from resnet_cli.cli.progress import task_progress

DATASETS = ("digits", "fashion-mnist")


def sample_data(
    dest: Annotated[Path, typer.Argument(metavar="DEST", help="Folder to create, e.g. data.", show_default=False)],
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset",
            help="digits (scikit-learn's 8x8 scans) or fashion-mnist (28x28 clothing, from the IDX files in --source).",
            autocompletion=complete_from(*DATASETS),
        ),
    ] = "digits",
    source: Annotated[
        Path | None,
        typer.Option(
            "--source",
            help="fashion-mnist: folder holding the four IDX files, raw or .gz "
            "[default: /usr/share/datasets/fashion-mnist, from 'apt-get install dataset-fashion-mnist'].",
            show_default=False,
        ),
    ] = None,
    per_class: Annotated[
        int | None,
        typer.Option(
            "--per-class",
            help="Keep only the first N images of each class (fashion-mnist: from each of train and test).",
            show_default=False,
        ),
    ] = None,
    val: Annotated[
        float | None,
        typer.Option(
            "--val",
            help="fashion-mnist: fraction of each class's training images for validation [default: 0.1].",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="fashion-mnist: seed of the validation draw [default: 42].", show_default=False),
    ] = None,
    workers: Workers = None,
    force: Force = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Write a real image dataset that is already on this machine as PNGs; nothing is downloaded.

    `--dataset digits` (the default): scikit-learn's 1,797 scanned handwritten digits (8x8, 10 classes) in
    `DEST/CLASS/`; split them with `resnet split`.

    `--dataset fashion-mnist`: Zalando's 70,000 photos of clothing (28x28 greyscale, 10 classes, MIT licence)
    from the four standard IDX files, in `DEST/PART/CLASS/` with the split manifest written: the official 10,000
    test images are the test part, a seeded stratified `--val` share of the training images the validation part.
    `resnet train --data DEST` works at once.
    """
    from resnet_cli.errors import ConfigError

    if dataset not in DATASETS:
        raise ConfigError(f"--dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if dataset == "digits":
        given = [flag for flag, value in (("--source", source), ("--val", val), ("--seed", seed)) if value is not None]
        if workers is not None:
            given.append("--workers")
        if given:
            raise ConfigError(f"{', '.join(given)} apply to --dataset fashion-mnist only: drop them for digits")
        _digits(dest, per_class, force, json_out, quiet)
    else:
        val = 0.1 if val is None else val
        seed = 42 if seed is None else seed
        _fashion_mnist(dest, source, per_class, val, seed, workers, force, json_out, quiet)


def _digits(dest: Path, per_class: int | None, force: bool, json_out: bool, quiet: bool) -> None:
    from resnet_cli.data.sample import write_digits

    result = write_digits(dest, force=force, per_class=per_class)
    if json_out:
        console.print_json(result.to_dict())
        return
    console.info_line(f"wrote {result.images} images in {len(result.classes)} classes", quiet)
    console.print_path(result.dest)


def _fashion_mnist(
    dest: Path,
    source: Path | None,
    per_class: int | None,
    val: float,
    seed: int,
    workers: int | None,
    force: bool,
    json_out: bool,
    quiet: bool,
) -> None:
    from resnet_cli.data.sample import write_fashion_mnist

    with task_progress("writing and verifying images", quiet or json_out) as progress:
        result = write_fashion_mnist(
            dest, source, val=val, seed=seed, per_class=per_class, force=force, workers=workers, progress=progress
        )
    for message in result.warnings:
        console.warning_line(message)
    if json_out:
        console.print_json(result.to_dict())
        return
    totals = result.totals()
    console.info_line(
        f"wrote {result.images} Fashion-MNIST images in {len(result.classes)} classes from {result.source}: "
        f"train {totals['train']}, val {totals['val']} (seed {seed}), test {totals['test']} (the official test set); "
        f"manifest {result.manifest}",
        quiet,
    )
    console.info_line(f"next: resnet train --data {dest}, then resnet eval RUN (on the official test set)", quiet)
    console.print_path(result.dest)


def register(app: typer.Typer) -> None:
    app.command(
        "sample-data",
        epilog="Examples:\n\n"
        "- `resnet sample-data data && resnet split data --val 0.2` (the quick start)\n"
        "- `resnet sample-data tiny --per-class 20` (200 images, for smoke tests)\n"
        "- `resnet sample-data fmnist --dataset fashion-mnist && resnet train --data fmnist` "
        "(after `sudo apt-get install dataset-fashion-mnist`)",
    )(sample_data)

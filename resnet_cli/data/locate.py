"""Which manifest a trained model is evaluated on: the one the user names, else the one it trained on.

The caller reads where the model's records say it trained (its checkpoint's configuration, the run's
``config.json``) and passes those locations here as plain paths, so the data layer never reads weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from resnet_cli.data.split import Manifest, default_manifest_path, read_manifest
from resnet_cli.errors import DatasetError


@dataclass(frozen=True)
class RecordedManifest:
    """A manifest a training run recorded: the CSV and the image folder its rows are relative to."""

    path: Path
    root: str | None = None  # None: the folder the manifest's sidecar names


def locate_manifest(
    data: str | os.PathLike[str] | None,
    manifest: str | os.PathLike[str] | None,
    recorded: Sequence[RecordedManifest],
    owner: str | os.PathLike[str],
) -> Manifest:
    """The manifest to evaluate on: ``manifest``, else ``DATA/manifest.csv``, else the first of ``recorded``
    that still exists (when none does, the error names the last).

    Args:
        data: the data folder the user gave (``--data``): the images' root, and where ``manifest.csv`` is.
        manifest: the manifest the user gave (``--manifest``).
        recorded: where the model's records say it trained, most trusted first.
        owner: the weights, named in the error when no manifest is recorded at all.

    Raises:
        DatasetError: none can be found; or the one found is unreadable (see :func:`read_manifest`).
    """
    if manifest is not None:
        return read_manifest(manifest, root=data)
    if data is not None:
        return read_manifest(default_manifest_path(data), root=data)
    for entry in recorded:
        if entry.path.is_file():
            return read_manifest(entry.path, root=entry.root)
    if recorded:
        raise DatasetError(
            f"the manifest the model was trained with ({recorded[-1].path}) is gone: pass --data or --manifest"
        )
    raise DatasetError(f"{owner} does not say where its data is: pass --data DIR (or --manifest FILE)")

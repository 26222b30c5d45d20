"""Checkpoints: plain values and tensors only, written atomically, read with ``weights_only=True``.

A checkpoint is a dict holding the model's state dict (clean keys), the model's build arguments, the class
list and preprocessing, and, for resumable checkpoints, the optimiser, scheduler, early-stopping and AMP
scaler states, every RNG state and the position in the epoch. Nothing in it is a pickled class, so
``torch.load(path, weights_only=True)`` reads it without an allow-list, and nothing in a hostile file runs.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet_cli.errors import CheckpointError, RunFailedError
from resnet_cli.io.atomic import atomic_write_bytes

FORMAT = "resnet-cli checkpoint"
VERSION = 1
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare network under DataParallel, DistributedDataParallel, torch.compile and autocast wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
            model = model.module
        elif getattr(model, "wraps_model", False):
            model = model.model
        else:
            return model


def clean_state_dict(state: Mapping[str, Any]) -> dict[str, Any]:
    """Strip exactly the wrapper prefixes ``module.`` and ``_orig_mod.`` (repeatedly, in any order)."""
    cleaned = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix) :]
                    changed = True
        cleaned[key] = value
    return cleaned


def non_finite_tensors(state: Mapping[str, Any]) -> list[str]:
    """Names of floating-point tensors holding NaN or infinity."""
    return [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]


def save_checkpoint(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], payload: dict[str, Any]) -> None:
    """Serialise once in memory, then write each path atomically, in order: a failed write leaves the previous
    file intact.

    Raises:
        RunFailedError: non-finite weights (the previous checkpoints are kept) or a failed write.
    """
    targets = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    bad = non_finite_tensors(payload.get("model", {}))
    if bad:
        raise RunFailedError(
            f"refusing to write {targets[-1]}: the weights hold NaN or infinity ({bad[0]}); the previous checkpoint "
            "is intact: lower --lr or use --precision fp32"
        )
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **payload}, buffer)
    for path in targets:
        atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a file with ``torch.load(weights_only=True)``, turning every failure into one clear line.

    Raises:
        CheckpointError: missing, truncated, not a torch file, or holding pickled objects (never run).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise CheckpointError(
                f"{path} is not a safe checkpoint: it holds pickled Python objects, which were refused without "
                "being run; load only files you trust, or export plain weights"
            ) from None
        raise CheckpointError(f"{path} is corrupt ({first[:120]})") from None
    except PermissionError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    except Exception as exc:  # torch.load raises many kinds (RuntimeError, KeyError, EOFError, OSError...)
        detail = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is truncated or not a torch checkpoint ({detail}): write it again") from None
    return data


def read_project_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Like :func:`load_checkpoint`, also requiring this project's format.

    Raises:
        CheckpointError: the file is a plain state dict or another program's checkpoint.
    """
    data = load_checkpoint(path, map_location)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a resnet-cli checkpoint (no model configuration inside): "
            "use a run folder, its best.pt or last.pt, or an exported .safetensors"
        )
    if int(data.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path} was written by a newer resnet-cli (format {data['version']}): upgrade")
    for key in ("model", "model_config", "classes", "preprocess"):
        if key not in data:
            raise CheckpointError(f"{path} lacks {key!r}: it is damaged or incomplete")
    return data

"""Weights from any source: a run folder, a ``.pt`` checkpoint, a ``.safetensors`` export, or (for
``--init``) a plain torchvision/timm state dict. Everything is read without unpickling objects.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet_cli.config import ModelConfig, PreprocessConfig
from resnet_cli.data.split import Manifest, default_manifest_path, read_manifest
from resnet_cli.errors import CheckpointError, DatasetError
from resnet_cli.io.checkpoint import clean_state_dict, load_checkpoint, read_project_checkpoint

SAFETENSORS_FORMAT = "resnet-cli weights"


@dataclass
class LoadedWeights:
    """A trained network's weights and everything needed to use them."""

    source: Path  # the file read
    kind: str  # "checkpoint" or "safetensors"
    model_config: ModelConfig
    classes: list[str]
    preprocess: PreprocessConfig
    state_dict: dict[str, torch.Tensor]
    sha256: str
    run_dir: Path  # where reports about these weights go: the run folder, or the file's folder
    checkpoint: dict[str, Any] | None = None  # the whole checkpoint, when the source is one
    metadata: dict[str, str] | None = None  # safetensors metadata, when the source is one

    @property
    def precision(self) -> str:
        """The precision the weights were trained (and validated) in."""
        if self.checkpoint is not None:
            return str(self.checkpoint.get("precision", "fp32"))
        return (self.metadata or {}).get("precision", "fp32")

    @property
    def batch_size(self) -> int:
        """The batch size of training (and validation): evaluating in the same batches gives the same numbers."""
        if self.checkpoint is not None:
            return int((self.checkpoint.get("config") or {}).get("batch_size", 64))
        return int((self.metadata or {}).get("batch_size", 64))

    def build(self) -> nn.Module:
        """The network with these weights, in eval mode, on the CPU, in float32."""
        from resnet_cli.models import build_model

        cfg = self.model_config
        model = build_model(cfg.arch, cfg.num_classes, cfg.in_channels, cfg.small_input)
        state = {k: v.float() if v.is_floating_point() else v for k, v in self.state_dict.items()}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"weights in {self.source} do not fit {cfg.arch} ({_first_line(exc)}): the file is damaged"
            ) from None
        return model.eval()


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights_path(target: str | os.PathLike[str]) -> Path:
    """A run folder means its ``best.pt`` (``last.pt`` while no best exists yet).

    Raises:
        CheckpointError: nothing usable at ``target``.
    """
    path = Path(target)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"no checkpoint in {path} (no best.pt or last.pt): train a run there first")
    if not path.exists():
        raise CheckpointError(f"{path} does not exist: give a run folder, a .pt checkpoint or a .safetensors file")
    return path


def load_weights(target: str | os.PathLike[str]) -> LoadedWeights:
    """Read weights with their architecture, classes and preprocessing.

    Raises:
        CheckpointError: missing, corrupt, hostile or foreign files.
    """
    path = resolve_weights_path(target)
    run_dir = path.parent
    if path.suffix.lower() == ".safetensors":
        state, meta = read_safetensors(path)
        if meta.get("format") != SAFETENSORS_FORMAT:
            raise CheckpointError(
                f"{path} has no resnet-cli metadata (architecture, classes, preprocessing): export it with "
                "'resnet export', or pass it to 'resnet train --init' to fine-tune from it"
            )
        try:
            model_config = ModelConfig.from_dict(json.loads(meta["model"]))
            classes = list(json.loads(meta["classes"]))
            preprocess = PreprocessConfig.from_dict(json.loads(meta["preprocess"]))
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{path} has damaged metadata ({exc}): export it again") from None
        return LoadedWeights(
            path, "safetensors", model_config, classes, preprocess, state, file_sha256(path), run_dir, None, meta
        )
    data = read_project_checkpoint(path)
    try:
        model_config = ModelConfig.from_dict(data["model_config"])
        preprocess = PreprocessConfig.from_dict(data["preprocess"])
        classes = [str(c) for c in data["classes"]]
    except (TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path} has a damaged configuration ({exc})") from None
    if not isinstance(data["model"], dict) or not all(torch.is_tensor(v) for v in data["model"].values()):
        raise CheckpointError(f"{path} has no state dict of tensors under 'model': it is damaged")
    state = clean_state_dict(data["model"])
    if len(classes) != model_config.num_classes:
        raise CheckpointError(f"{path} lists {len(classes)} classes for a {model_config.num_classes}-way classifier")
    return LoadedWeights(path, "checkpoint", model_config, classes, preprocess, state, file_sha256(path), run_dir, data)


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file.

    Raises:
        CheckpointError: truncated or malformed file.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            meta = dict(handle.metadata() or {})
            state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # safetensors raises its own error types and OSError/ValueError
        raise CheckpointError(f"{path} is not a valid safetensors file ({_first_line(exc)}): export it again") from None
    return state, meta


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict from any weights file, for ``--init``: our checkpoints and exports, or torchvision's,
    timm's and Lightning's files (``state_dict``/``model`` entries), with wrapper prefixes stripped.

    Raises:
        CheckpointError: unreadable, hostile, or holding no tensors.
    """
    path = Path(path)
    if path.is_dir():
        path = resolve_weights_path(path)
    if path.suffix.lower() == ".safetensors":
        state, _ = read_safetensors(path)
    else:
        data = load_checkpoint(path)
        state = data
        if isinstance(data, dict):
            for key in ("model", "state_dict", "model_state_dict", "model_ema"):
                if isinstance(data.get(key), dict):
                    state = data[key]
                    break
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors")
    return clean_state_dict(state)


def adapt_state_dict(state: dict[str, torch.Tensor], model: nn.Module, source: str | Path) -> tuple[dict, list[str]]:
    """Fit a foreign state dict to ``model`` for fine-tuning.

    A classifier of another size is left out (the new one stays freshly initialised); a first convolution
    for RGB is summed over its input channels for a greyscale model; a first convolution of another kernel
    size (the small-input stem) is left out. Anything else that does not match is an error.

    Returns:
        The state dict to load with ``strict=False`` and notes describing each adaptation.

    Raises:
        CheckpointError: keys or shapes that belong to another architecture.
    """
    target = model.state_dict()
    notes: list[str] = []
    adapted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked") and key in target:
            adapted[key] = value
            continue
        if key not in target:
            raise CheckpointError(
                f"{source} does not fit this architecture: it has {key!r}, which the model lacks "
                "(weights of another depth?): choose the matching --arch"
            )
        want = target[key].shape
        if value.shape == want:
            adapted[key] = value
        elif key.startswith("fc."):
            if "fc" not in " ".join(notes):
                notes.append(f"classifier replaced: {state['fc.weight'].shape[0]} -> {want[0]} classes")
        elif key == "conv1.weight" and value.shape[2:] == want[2:] and value.shape[1] == 3 and want[1] == 1:
            adapted[key] = value.sum(dim=1, keepdim=True)
            notes.append("first convolution summed over RGB for greyscale input")
        elif key == "conv1.weight":
            notes.append(f"first convolution left out: {tuple(value.shape)} does not fit {tuple(want)} (another stem)")
        else:
            raise CheckpointError(
                f"{source} does not fit this architecture: {key} has shape {tuple(value.shape)}, "
                f"the model needs {tuple(want)}: choose the matching --arch"
            )
    missing = [k for k in target if k not in adapted and not k.startswith("fc.") and k != "conv1.weight"]
    if missing:
        raise CheckpointError(
            f"{source} lacks {len(missing)} of the model's tensors, e.g. {missing[0]!r}: choose the matching --arch"
        )
    return adapted, notes


def find_manifest(
    weights: LoadedWeights, data: str | os.PathLike[str] | None, manifest: str | os.PathLike[str] | None
) -> Manifest:
    """The manifest to evaluate on: ``manifest``, else ``DATA/manifest.csv``, else the one the run trained on.

    Raises:
        DatasetError: none can be found.
    """
    if manifest is not None:
        return read_manifest(manifest, root=data)
    if data is not None:
        return read_manifest(default_manifest_path(data), root=data)
    config = (weights.checkpoint or {}).get("config") or {}
    if config.get("manifest"):
        path = Path(config["manifest"])
        if path.is_file():
            return read_manifest(path, root=config.get("data"))
        raise DatasetError(f"the manifest the model was trained with ({path}) is gone: pass --data or --manifest")
    raise DatasetError(f"{weights.source} does not say where its data is: pass --data DIR (or --manifest FILE)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]

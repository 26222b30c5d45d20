"""``predict``: top-k classes for image files and folders, with the preprocessing recorded at training time.

The weights are a run folder, a checkpoint, a safetensors export, or an ONNX export (run with onnxruntime;
its classes and preprocessing come from its metadata, or from the run's ``config.json`` beside it). Only
regular files are read as images: a FIFO or a link to a device is reported by name as a failed input.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.transforms.v2 import functional as F

from resnet_cli.data import images
from resnet_cli.data.transforms import eval_transform
from resnet_cli.engine.device import Placement, resolve_device
from resnet_cli.engine.inference import inference_network, to_device
from resnet_cli.errors import CheckpointError, ConfigError, DatasetError
from resnet_cli.fs import special_file_kind
from resnet_cli.io.checkpoint import identify_file
from resnet_cli.io.weights import (
    LoadedWeights,
    OnnxWeights,
    load_onnx,
    load_weights,
    only_the_average,
    resolve_weights_path,
)


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]] = field(default_factory=list)  # (class, probability), best first
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "top": [{"class": c, "probability": round(p, 6)} for c, p in self.top],
            "error": self.error,
        }


@dataclass
class PredictResult:
    weights: str
    classes: list[str]
    predictions: list[Prediction]
    described: str = ""  # which weights, e.g. "best.pt (epoch 3)"
    note: str | None = None  # a warning about those weights (last.pt used for want of best.pt)

    @property
    def failed(self) -> int:
        return sum(1 for p in self.predictions if p.error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights,
            "weights_described": self.described,
            "note": self.note,
            "images": len(self.predictions),
            "failed": self.failed,
            "predictions": [p.to_dict() for p in self.predictions],
        }


def collect_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; folders searched recursively for image names (hidden entries skipped), sorted.

    Entries that are not regular files (a FIFO, a link to a device) are kept, so that :func:`predict` reports
    them by name as failed inputs; they are never opened here.

    Raises:
        DatasetError: a path that does not exist, or nothing to predict.
    """
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if images.is_image_name(p.name)
                and not p.is_dir()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            files.extend(found)
        elif path.exists() or path.is_symlink():
            files.append(path)
        else:
            raise DatasetError(f"{path} does not exist: give image files or folders")
    if not files:
        raise DatasetError(f"no images found in {', '.join(map(str, inputs))}")
    return files


def not_regular(path: Path) -> str | None:
    """Why ``path`` cannot be read as an image without opening it (``None`` for a regular file)."""
    try:
        mode = os.stat(path).st_mode  # follows links: a link to /dev/zero is a character device
    except FileNotFoundError:
        return "does not exist (a broken link?)"
    except OSError as exc:
        return exc.strerror or str(exc)
    kind = special_file_kind(mode)
    return f"not a regular file ({kind}): only image files are read" if kind else None


def predict(
    target: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    top_k: int = 5,
    batch_size: int = 64,
    device: str = "auto",
    precision: str = "auto",
    ema: bool = True,
) -> PredictResult:
    """Classify images; a file that cannot be decoded gets an ``error`` and the others go on.

    Raises:
        ConfigError, CheckpointError, DatasetError, DeviceError: bad options, weights or paths.
    """
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    dev, _ = resolve_device(device)
    path = resolve_weights_path(target)
    weights: LoadedWeights | OnnxWeights
    net: nn.Module | OnnxWeights
    placement: Placement | None
    if identify_file(path).kind == "onnx":
        if precision not in ("auto", "fp32"):
            raise ConfigError(f"--precision {precision} does not apply to an ONNX model, which runs in float32")
        weights = load_onnx(path, _onnx_providers(dev))
        if not ema and weights.ema:  # one set of weights in the file: --no-ema cannot be honoured
            raise CheckpointError(only_the_average(path))
        net, placement = weights, None
    else:
        weights = load_weights(target, ema=ema)
        net, placement = inference_network(weights, dev, precision)
    files = collect_inputs(inputs)
    pre = weights.preprocess
    transform = eval_transform(pre)
    k = min(top_k, len(weights.classes))
    results = [Prediction(str(f)) for f in files]
    for start in range(0, len(files), batch_size):
        chunk = list(range(start, min(start + batch_size, len(files))))
        tensors, ok = [], []
        for i in chunk:
            reason = not_regular(files[i])
            if reason is not None:
                results[i].error = reason
                continue
            try:
                pixels = images.load(files[i], pre.in_channels, pre.background)
            except images.ImageDecodeError as exc:
                results[i].error = str(exc)
                continue
            except OSError as exc:
                results[i].error = exc.strerror or str(exc)
                continue
            tensors.append(transform(F.pil_to_tensor(pixels)))
            ok.append(i)
        if not tensors:
            continue
        batch = torch.stack(tensors)
        with torch.inference_mode():
            logits = net(batch) if placement is None else net(to_device(batch, placement))
            probabilities = logits.float().softmax(dim=1).cpu()
        values, indices = probabilities.topk(k, dim=1)
        for row, i in enumerate(ok):
            results[i].top = [
                (weights.classes[int(c)], float(v)) for v, c in zip(values[row], indices[row], strict=True)
            ]
    return PredictResult(str(weights.source), list(weights.classes), results, weights.describe(), weights.note)


def _onnx_providers(dev: torch.device) -> list[str]:
    """onnxruntime's CUDA provider when predicting on a GPU and it is installed, else the CPU."""
    if dev.type == "cuda":
        try:
            import onnxruntime as ort
        except ImportError:  # load_onnx says how to install it
            return ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]

"""``predict``: top-k classes for image files and folders, with the preprocessing recorded at training time."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms.v2 import functional as F

from resnet_cli.data import images
from resnet_cli.data.transforms import eval_transform
from resnet_cli.engine.device import resolve_device
from resnet_cli.engine.inference import inference_network, to_device
from resnet_cli.errors import ConfigError, DatasetError
from resnet_cli.io.weights import load_weights


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

    @property
    def failed(self) -> int:
        return sum(1 for p in self.predictions if p.error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights,
            "images": len(self.predictions),
            "failed": self.failed,
            "predictions": [p.to_dict() for p in self.predictions],
        }


def collect_inputs(inputs: list[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; folders searched recursively for images (hidden entries skipped), sorted.

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
                if p.is_file()
                and images.is_image_name(p.name)
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise DatasetError(f"{path} does not exist: give image files or folders")
    if not files:
        raise DatasetError(f"no images found in {', '.join(map(str, inputs))}")
    return files


def predict(
    target: str | os.PathLike[str],
    inputs: list[str | os.PathLike[str]],
    top_k: int = 5,
    batch_size: int = 64,
    device: str = "auto",
    precision: str = "auto",
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
    weights = load_weights(target)
    files = collect_inputs(inputs)
    pre = weights.preprocess
    transform = eval_transform(pre)
    net, placement = inference_network(weights, dev, precision)
    k = min(top_k, len(weights.classes))
    results = [Prediction(str(f)) for f in files]
    for start in range(0, len(files), batch_size):
        chunk = list(range(start, min(start + batch_size, len(files))))
        tensors, ok = [], []
        for i in chunk:
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
        with torch.inference_mode():
            probabilities = net(to_device(torch.stack(tensors), placement)).float().softmax(dim=1).cpu()
        values, indices = probabilities.topk(k, dim=1)
        for row, i in enumerate(ok):
            results[i].top = [
                (weights.classes[int(c)], float(v)) for v, c in zip(values[row], indices[row], strict=True)
            ]
    return PredictResult(str(weights.source), list(weights.classes), results)

"""Frozen configuration dataclasses (standard library only).

Every checkpoint and export carries :class:`ModelConfig`, the class list and :class:`PreprocessConfig`, so
``eval``, ``summary``, ``export`` and ``predict`` rebuild the model and its preprocessing without flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T", bound="_Dict")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Dict:
    """``to_dict``/``from_dict`` for plain-value dataclasses (tuples become lists in JSON and back)."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """Build from a dict, ignoring keys this version does not know (files from newer versions)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs = {}
        for name, value in data.items():
            if name in fields:
                kwargs[name] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, _Dict):
        return value.to_dict()
    return value


@dataclass(frozen=True)
class ModelConfig(_Dict):
    """What it takes to rebuild a network."""

    arch: str = "resnet34"  # canonical name, see resnet_cli.models.list_models()
    num_classes: int = 1000
    in_channels: int = 3  # 1 for greyscale data
    small_input: bool = False  # 3x3 stride-1 stem without max-pool: train turns it on at 64 px or less


@dataclass(frozen=True)
class PreprocessConfig(_Dict):
    """How an image file becomes the network's input; recorded at training time, applied by eval and predict."""

    image_size: int = 224  # side of the square the network sees
    resize_size: int = 256  # eval: shorter side resized to this, then centre-cropped to image_size
    in_channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    normalize: str = "imagenet"  # where mean/std came from: "imagenet" or "dataset"
    augment: str = "rrc"  # train only: "rrc" (random-resized crop), "crop" (pad + random crop), "none"
    hflip: bool = False  # train only: random horizontal flip (off by default: wrong for digits and text)
    background: int = 255  # grey level alpha channels are composited on (white)


@dataclass(frozen=True)
class TrainConfig(_Dict):
    """Options of ``resnet train``. ``None`` means "choose automatically"; the run's config.json records the
    resolved values."""

    data: str = "data"  # ImageFolder root holding the split manifest
    manifest: str | None = None  # default: <data>/manifest.csv
    arch: str = "resnet34"
    out: str | None = None  # default: runs/r<depth>
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3  # AdamW's usual starting point for from-scratch ResNets at batch 64
    weight_decay: float = 0.05
    image_size: int | None = None  # default: 224, or the images' own size when they are 64 px or smaller
    in_channels: int | None = None  # default: 1 when every training image is greyscale, else 3
    small_input: bool | None = None  # default: on when image_size <= 64
    augment: str | None = None  # default: "crop" for small images, "rrc" otherwise
    hflip: bool = False
    normalize: str = "imagenet"  # or "dataset": mean/std of the train part
    patience: int = 8  # early stopping: epochs without a val-loss improvement larger than min_delta
    min_delta: float = 0.0
    lr_patience: int = 3  # ReduceLROnPlateau on val loss
    lr_factor: float = 0.1
    min_lr: float = 1e-6
    label_smoothing: float = 0.0
    zero_init_residual: bool = False
    seed: int = 42
    workers: int | None = None  # data-loading processes; default: min(4, CPUs - 1)
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    gpus: tuple[int, ...] = field(default_factory=tuple)  # DataParallel over these CUDA devices
    precision: str = "auto"  # auto, fp32, bf16, fp16
    channels_last: bool | None = None
    compile: bool = False
    init: str | None = None  # weights to start from (torchvision/timm state dict, our .pt or .safetensors)
    save_every: int = 0  # also write last.pt every N optimiser steps within an epoch (0: epoch ends only)
    max_steps_per_epoch: int = 0  # cap on training steps per epoch, for smoke tests (0: no cap)


@dataclass(frozen=True)
class SplitConfig(_Dict):
    """Options of ``resnet split``."""

    val: float = 0.2  # fraction of each class for validation (> 0)
    test: float = 0.0  # fraction of each class held out for the final test (0: no test part)
    seed: int = 42
    skip_bad: bool = False  # leave unreadable images out (recorded) instead of failing
    dedupe: bool = False  # keep one file of each group of byte-identical files
    drop_small: bool = False  # leave out classes too small to have an image in every part (recorded)
    out: str | None = None  # manifest path; default <data>/manifest.csv
    force: bool = False  # replace an existing manifest
    workers: int | None = None  # processes verifying images; default: all CPUs

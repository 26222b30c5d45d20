"""Preprocessing with torchvision's transforms v2, on uint8 tensors (C, H, W).

Training augmentations (``PreprocessConfig.augment``):

* ``rrc``: random-resized crop (scale 0.08-1, ImageNet's recipe) for photographs of 64 px and more;
* ``crop``: resize, then a random crop after zero-padding by 1/8 of the side (the CIFAR recipe): small
  translations that keep the whole object, right for digits and other small images;
* ``none``: the evaluation pipeline.

Evaluation: resize the shorter side to ``resize_size``, centre-crop ``image_size``. Both end with
conversion to float in [0, 1] and per-channel normalisation.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from resnet_cli.config import PreprocessConfig
from resnet_cli.errors import ConfigError

AUGMENTATIONS = ("rrc", "crop", "none")


def eval_transform(pre: PreprocessConfig, normalize: bool = True) -> v2.Compose:
    steps: list[v2.Transform] = [
        v2.Resize(pre.resize_size, antialias=True),
        v2.CenterCrop(pre.image_size),
        v2.ToDtype(torch.float32, scale=True),
    ]
    if normalize:
        steps.append(v2.Normalize(list(pre.mean), list(pre.std)))
    return v2.Compose(steps)


def train_transform(pre: PreprocessConfig) -> v2.Compose:
    if pre.augment == "rrc":
        steps: list[v2.Transform] = [v2.RandomResizedCrop(pre.image_size, antialias=True)]
    elif pre.augment == "crop":
        steps = [
            v2.Resize(pre.image_size, antialias=True),
            v2.CenterCrop(pre.image_size),
            v2.RandomCrop(pre.image_size, padding=max(1, pre.image_size // 8)),
        ]
    elif pre.augment == "none":
        steps = [v2.Resize(pre.resize_size, antialias=True), v2.CenterCrop(pre.image_size)]
    else:
        raise ConfigError(f"unknown augmentation {pre.augment!r}: choose one of {', '.join(AUGMENTATIONS)}")
    if pre.hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(pre.mean), list(pre.std))]
    return v2.Compose(steps)

"""Preprocessing with torchvision's transforms v2, on uint8 tensors (C, H, W).

Training augmentations (``PreprocessConfig.augment``):

* ``rrc``: random-resized crop (scale 0.08-1, ImageNet's recipe) for photographs of 64 px and more;
* ``crop``: resize, then a random crop after zero-padding by 1/8 of the side (the CIFAR recipe): small
  translations that keep the whole object, right for digits and other small images;
* ``none``: the evaluation pipeline;
* ``randaugment`` (2 operations at magnitude 9, DeiT's setting), ``trivialaugment`` or ``autoaugment`` (the
  CIFAR-10 policy for images of 64 px or less, else ImageNet's): that policy on top of ``crop`` (images of
  64 px or less) or ``rrc``.

``random_erasing`` > 0 erases a random rectangle of the normalised image with that probability (Zhong et al.
2017, as DeiT and timm do). Every random choice draws from torch's generator, which the dataset seeds per
sample, so augmentation stays reproducible and resume exact.

Evaluation: resize the shorter side to ``resize_size``, centre-crop ``image_size``. Both end with
conversion to float in [0, 1] and per-channel normalisation.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from resnet_cli.config import PreprocessConfig
from resnet_cli.errors import ConfigError

AUGMENTATIONS = ("rrc", "crop", "none", "randaugment", "trivialaugment", "autoaugment")
POLICIES = AUGMENTATIONS[3:]
#: At or below this side (px) a policy sits on pad-and-crop and AutoAugment uses its CIFAR-10 policy.
SMALL_SIDE = 64


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
    base = pre.augment
    if base in POLICIES:
        base = "crop" if pre.image_size <= SMALL_SIDE else "rrc"
    if base == "rrc":
        steps: list[v2.Transform] = [v2.RandomResizedCrop(pre.image_size, antialias=True)]
    elif base == "crop":
        steps = [
            v2.Resize(pre.image_size, antialias=True),
            v2.CenterCrop(pre.image_size),
            v2.RandomCrop(pre.image_size, padding=max(1, pre.image_size // 8)),
        ]
    elif base == "none":
        steps = [v2.Resize(pre.resize_size, antialias=True), v2.CenterCrop(pre.image_size)]
    else:
        raise ConfigError(f"unknown augmentation {pre.augment!r}: choose one of {', '.join(AUGMENTATIONS)}")
    if pre.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if pre.augment == "randaugment":
        steps.append(v2.RandAugment(num_ops=2, magnitude=9))
    elif pre.augment == "trivialaugment":
        steps.append(v2.TrivialAugmentWide())
    elif pre.augment == "autoaugment":
        policy = v2.AutoAugmentPolicy.CIFAR10 if pre.image_size <= SMALL_SIDE else v2.AutoAugmentPolicy.IMAGENET
        steps.append(v2.AutoAugment(policy))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(pre.mean), list(pre.std))]
    if pre.random_erasing > 0:
        steps.append(v2.RandomErasing(p=pre.random_erasing, value=0))
    return v2.Compose(steps)

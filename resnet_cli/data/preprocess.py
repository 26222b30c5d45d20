"""Choosing the input pipeline of a run from its options and its data.

Without ``--image-size`` the run looks at the training images' sizes (recorded in the manifest, so nothing
is decoded): images of 64 px or less are used at their own size (rounded up to a multiple of 8, at least 8)
with the small-input stem and pad-and-crop augmentation; larger ones at 224 px (or their own size rounded
to a multiple of 32 when smaller) with the standard stem and random-resized crops. Without
``--in-channels`` a dataset whose training images are all greyscale trains a one-channel network.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from resnet_cli.config import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig, TrainConfig
from resnet_cli.data.images import GREY_MODES
from resnet_cli.data.split import ManifestRow
from resnet_cli.data.transforms import AUGMENTATIONS, POLICIES, SMALL_SIDE
from resnet_cli.errors import ConfigError
from resnet_cli.models.registry import canonical_arch, check_image_size, default_small_input, family_of

SMALL_IMAGE = SMALL_SIDE  # px: at or below this, the small-input stem and pad-and-crop augmentation by default
EVAL_CROP = 0.875  # standard centre-crop ratio for photographs (resize 256 -> crop 224)


def auto_image_size(rows: Sequence[ManifestRow]) -> int:
    sides = [min(r.width, r.height) for r in rows if r.width and r.height]
    if not sides:
        return 224
    typical = statistics.median(sides)
    if typical <= SMALL_IMAGE:
        return max(8, 8 * math.ceil(typical / 8))
    return min(224, 32 * round(typical / 32))


def resolve(config: TrainConfig, train_rows: Sequence[ManifestRow]) -> tuple[PreprocessConfig, bool]:
    """The run's preprocessing (mean/std still ImageNet's when ``normalize == "dataset"``) and stem choice.

    Raises:
        ConfigError: impossible sizes, channels or augmentation names.
    """
    if config.in_channels is not None and config.in_channels not in (1, 3):
        raise ConfigError(f"--in-channels must be 1 (greyscale) or 3 (RGB), got {config.in_channels}")
    channels = config.in_channels or (1 if train_rows and all(r.mode in GREY_MODES for r in train_rows) else 3)
    size = config.image_size if config.image_size is not None else auto_image_size(train_rows)
    resnet = family_of(canonical_arch(config.arch)) == "resnet"
    if config.small_input and not resnet:
        raise ConfigError(
            "--small-input is the ResNet stem for small images; a ViT takes a smaller patch instead, e.g. vit-s/4"
        )
    small = config.small_input
    if small is None:
        small = size > 0 and default_small_input(config.arch, size)
    check_image_size(size, small, config.arch)
    augment = config.augment or ("crop" if size <= SMALL_IMAGE else "rrc")
    if augment not in AUGMENTATIONS:
        raise ConfigError(f"unknown --augment {augment!r}: choose one of {', '.join(AUGMENTATIONS)}")
    crops = "rrc" if augment == "rrc" or (augment in POLICIES and size > SMALL_IMAGE) else augment
    if config.normalize not in ("imagenet", "dataset"):
        raise ConfigError(f"unknown --normalize {config.normalize!r}: choose imagenet or dataset")
    mean, std = imagenet_stats(channels)
    pre = PreprocessConfig(
        image_size=size,
        resize_size=round(size / EVAL_CROP) if crops == "rrc" else size,
        in_channels=channels,
        mean=mean,
        std=std,
        normalize=config.normalize,
        augment=augment,
        hflip=config.hflip,
        random_erasing=float(config.random_erasing or 0),
    )
    return pre, small


def imagenet_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet's mean/std; for one channel, their averages."""
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (round(sum(IMAGENET_MEAN) / 3, 4),), (round(sum(IMAGENET_STD) / 3, 4),)

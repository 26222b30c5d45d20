"""Name resolution and construction: ``build_model("34")``, ``build_model("resnet50", num_classes=10)``."""

from __future__ import annotations

from collections.abc import Callable

from resnet_cli.errors import ConfigError
from resnet_cli.models.resnet import ResNet, resnet18, resnet34, resnet50, resnet101, resnet152

_BUILDERS: dict[str, Callable[..., ResNet]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
}

#: Smallest input side (px) each stem accepts: the last stage must still see at least one pixel.
MIN_IMAGE_SIZE = {False: 32, True: 8}


def list_models() -> list[str]:
    """Canonical architecture names, shallowest first."""
    return list(_BUILDERS)


def canonical_arch(arch: str | int) -> str:
    """Turn ``34``, ``"34"``, ``"ResNet34"`` or ``"resnet-34"`` into ``"resnet34"``.

    Raises:
        ConfigError: the name is not one of :func:`list_models`.
    """
    text = str(arch).strip().lower().replace("-", "").replace("_", "")
    name = text if text.startswith("resnet") else f"resnet{text}"
    if name not in _BUILDERS:
        depths = ", ".join(n.removeprefix("resnet") for n in _BUILDERS)
        raise ConfigError(f"unknown architecture {arch!r}: choose one of {depths} (or resnet34-style names)")
    return name


def depth_of(arch: str | int) -> int:
    """The depth of an architecture, e.g. 50 for ``"resnet50"``."""
    return int(canonical_arch(arch).removeprefix("resnet"))


def check_image_size(image_size: int, small_input: bool, arch: str = "resnet") -> None:
    """Refuse image sizes the network cannot take.

    Raises:
        ConfigError: the size is not positive or too small for the stem.
    """
    if image_size <= 0:
        raise ConfigError(
            f"image size must be a positive number of pixels (at least {MIN_IMAGE_SIZE[False]}, "
            f"or {MIN_IMAGE_SIZE[True]} with the small-input stem), got {image_size}"
        )
    minimum = MIN_IMAGE_SIZE[small_input]
    if image_size < minimum:
        hint = (
            ""
            if small_input
            else f", or use the small-input stem (--small-input) for images from {MIN_IMAGE_SIZE[True]} px"
        )
        stem = "small-input" if small_input else "standard"
        raise ConfigError(
            f"image size {image_size} px is too small for {arch} with the {stem} stem: use at least {minimum} px{hint}"
        )


def build_model(
    arch: str | int,
    num_classes: int = 1000,
    in_channels: int = 3,
    small_input: bool = False,
    zero_init_residual: bool = False,
) -> ResNet:
    """Build a freshly initialised ResNet.

    Args:
        arch: ``18``, ``34``, ``50``, ``101``, ``152`` or a ``"resnet34"``-style name.
        num_classes: size of the classifier's output.
        in_channels: input channels (1 for greyscale data).
        small_input: 3x3 stride-1 stem without max-pool, for small images (train turns it on at 64 px or less).
        zero_init_residual: zero-init each block's last BatchNorm.

    Raises:
        ConfigError: an unknown architecture or an impossible class or channel count.
    """
    name = canonical_arch(arch)
    if int(num_classes) < 1:
        raise ConfigError(f"number of classes must be at least 1, got {num_classes}")
    if int(in_channels) not in (1, 3):
        raise ConfigError(f"input channels must be 1 (greyscale) or 3 (RGB), got {in_channels}")
    return _BUILDERS[name](
        num_classes=int(num_classes),
        in_channels=int(in_channels),
        small_input=bool(small_input),
        zero_init_residual=bool(zero_init_residual),
    )

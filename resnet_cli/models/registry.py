"""One table of every architecture, name resolution and construction.

``build_model("34")``, ``build_model("resnet50", num_classes=10)``, ``build_model("vit-s/16", image_size=224)``.
Canonical names follow torchvision's builders: ``resnet18`` ... ``resnet152`` and ``vit_{ti,s,b,l}_{patch}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from resnet_cli.errors import ConfigError
from resnet_cli.models.resnet import ResNet, resnet18, resnet34, resnet50, resnet101, resnet152
from resnet_cli.models.vit import VisionTransformer

_RESNETS: dict[str, Callable[..., ResNet]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
}


@dataclass(frozen=True)
class ViTSize:
    """A ViT's width and depth (the patch size is the other half of its name)."""

    label: str  # "Ti", "S", "B", "L"
    hidden_dim: int
    num_layers: int
    num_heads: int
    mlp_dim: int


#: DeiT's Ti and S (Touvron et al. 2021) and the paper's B and L (Dosovitskiy et al. 2021).
VIT_SIZES = {
    "ti": ViTSize("Ti", 192, 12, 3, 768),
    "s": ViTSize("S", 384, 12, 6, 1536),
    "b": ViTSize("B", 768, 12, 12, 3072),
    "l": ViTSize("L", 1024, 24, 16, 4096),
}
VIT_PATCHES = (2, 4, 8, 16, 32)
_VITS = {f"vit_{size}_{patch}": (VIT_SIZES[size], patch) for size in VIT_SIZES for patch in VIT_PATCHES}
_VIT_ALIASES = {"tiny": "ti", "small": "s", "base": "b", "large": "l"}
_VIT_NAME = re.compile(r"vit[-_/ ]?(ti|tiny|small|base|large|s|b|l)[-_/ ]?(\d+)")

CHOICES = "18, 34, 50, 101, 152 or vit-{ti,s,b,l}/{2,4,8,16,32}"
#: Smallest input side (px) each ResNet stem accepts: the last stage must still see at least one pixel.
MIN_IMAGE_SIZE = {False: 32, True: 8}
#: At or below this side (px) ``resnet train`` picks the ResNets' small-input stem by default.
SMALL_INPUT_MAX = 64
#: A ViT's input side when none is given (torchvision's).
DEFAULT_VIT_IMAGE_SIZE = 224


def list_models() -> list[str]:
    """Canonical architecture names: ResNets shallowest first, then ViTs by size and patch."""
    return [*_RESNETS, *_VITS]


def _resolve(arch: str | int) -> str | None:
    text = str(arch).strip().lower()
    vit = _VIT_NAME.fullmatch(text)
    if vit:
        name = f"vit_{_VIT_ALIASES.get(vit[1], vit[1])}_{int(vit[2])}"
        return name if name in _VITS else None
    text = text.replace("-", "").replace("_", "")
    name = text if text.startswith("resnet") else f"resnet{text}"
    return name if name in _RESNETS else None


def canonical_arch(arch: str | int) -> str:
    """Turn ``34``, ``"ResNet34"``, ``"resnet-34"``, ``"ViT-S/16"``, ``"vit-s16"`` into ``"resnet34"``, ``"vit_s_16"``.

    Raises:
        ConfigError: the name is not one of :func:`list_models`.
    """
    name = _resolve(arch)
    if name is None:
        raise ConfigError(f"unknown architecture {arch!r}: choose {CHOICES} (or resnet34/vit_s_16-style names)")
    return name


def family_of(arch: str | int) -> Literal["resnet", "vit"]:
    """``"resnet"`` or ``"vit"``."""
    return "vit" if canonical_arch(arch) in _VITS else "resnet"


def default_small_input(arch: str | int, image_size: int) -> bool:
    """The stem ``resnet train`` picks when none is asked for: small-input for a ResNet at :data:`SMALL_INPUT_MAX`
    px or less (a ViT has no such stem)."""
    return image_size <= SMALL_INPUT_MAX and family_of(arch) == "resnet"


def depth_of(arch: str | int) -> int:
    """The depth of a ResNet, e.g. 50 for ``"resnet50"``.

    Raises:
        ConfigError: an unknown name, or a ViT (which has no depth in this sense).
    """
    name = canonical_arch(arch)
    if name in _VITS:
        raise ConfigError(f"{display_name(name)} is a Vision Transformer, not a ResNet: it has no ResNet depth")
    return int(name.removeprefix("resnet"))


def vit_spec(arch: str | int) -> tuple[ViTSize, int]:
    """A ViT's size and patch size, e.g. ``(VIT_SIZES["s"], 16)`` for ``"vit-s/16"``.

    Raises:
        ConfigError: an unknown name or a ResNet.
    """
    name = canonical_arch(arch)
    if name not in _VITS:
        raise ConfigError(f"{display_name(name)} is a ResNet, not a Vision Transformer")
    return _VITS[name]


def display_name(arch: str | int) -> str:
    """The name people write: ``"ResNet-34"``, ``"ViT-S/16"``."""
    name = canonical_arch(arch)
    if name in _VITS:
        size, patch = _VITS[name]
        return f"ViT-{size.label}/{patch}"
    return f"ResNet-{name.removeprefix('resnet')}"


def run_name(arch: str | int) -> str:
    """A short, file-name-safe name for a default run folder: ``"r34"`` (as 0.1.0), ``"vit-s16"``."""
    name = canonical_arch(arch)
    if name in _VITS:
        size, patch = _VITS[name]
        return f"vit-{size.label.lower()}{patch}"
    return f"r{name.removeprefix('resnet')}"


def check_image_size(image_size: int, small_input: bool, arch: str = "resnet") -> None:
    """Refuse image sizes the network cannot take.

    ResNets need at least :data:`MIN_IMAGE_SIZE` px for their stem; a ViT needs a positive multiple of its patch
    size (``small_input`` does not apply to ViTs and is ignored here; :func:`build_model` refuses it).

    Raises:
        ConfigError: the size is not positive, too small for the stem, or not a multiple of the ViT's patch.
    """
    name = _resolve(arch)
    if name in _VITS:
        _check_vit_size(image_size, name)
        return
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


def _check_vit_size(image_size: int, name: str) -> None:
    size, patch = _VITS[name]
    if image_size > 0 and image_size % patch == 0:
        return
    below = image_size // patch * patch if image_size > 0 else 0
    sizes = " or ".join(str(s) for s in (below, below + patch) if s > 0)
    smaller = [p for p in VIT_PATCHES if p < patch and image_size > 0 and image_size % p == 0]
    patch_hint = f", or a smaller patch such as vit-{size.label.lower()}/{smaller[-1]}" if smaller else ""
    raise ConfigError(
        f"image size {image_size} px does not fit {display_name(name)}, which needs a positive multiple of its "
        f"patch size {patch}: use {sizes} px{patch_hint}"
    )


def build_model(
    arch: str | int,
    num_classes: int = 1000,
    in_channels: int = 3,
    small_input: bool = False,
    zero_init_residual: bool = False,
    *,
    image_size: int | None = None,
    drop_path: float = 0.0,
) -> nn.Module:
    """Build a freshly initialised ResNet or Vision Transformer.

    Args:
        arch: ``18`` ... ``152``, a ``"resnet34"``-style name, or a ViT such as ``"vit-s/16"``.
        num_classes: size of the classifier's output.
        in_channels: input channels (1 for greyscale data).
        small_input: ResNets only: 3x3 stride-1 stem without max-pool, for small images (train turns it on at 64 px
            or less).
        zero_init_residual: ResNets only (ignored for ViTs): zero-init each block's last BatchNorm.
        image_size: ViTs only (ignored for ResNets): the input side the position embeddings are built for
            (default 224); a multiple of the patch size.
        drop_path: stochastic depth rate of the last block, rising linearly from 0 at the first; in [0, 1).

    Raises:
        ConfigError: an unknown architecture, an impossible class or channel count, image size or drop-path
            rate, or the small-input stem asked of a ViT.
    """
    name = canonical_arch(arch)
    if int(num_classes) < 1:
        raise ConfigError(f"number of classes must be at least 1, got {num_classes}")
    if int(in_channels) not in (1, 3):
        raise ConfigError(f"input channels must be 1 (greyscale) or 3 (RGB), got {in_channels}")
    if not 0 <= float(drop_path) < 1:
        raise ConfigError(f"--drop-path must be at least 0 and below 1 (e.g. 0.1), got {drop_path}")
    if name in _RESNETS:
        return _RESNETS[name](
            num_classes=int(num_classes),
            in_channels=int(in_channels),
            small_input=bool(small_input),
            zero_init_residual=bool(zero_init_residual),
            drop_path=float(drop_path),
        )
    size, patch = _VITS[name]
    if small_input:
        raise ConfigError(
            f"the small-input stem is a ResNet option; ViTs take a smaller patch, e.g. vit-{size.label.lower()}/4 "
            f"(asked for {display_name(name)} with --small-input)"
        )
    side = DEFAULT_VIT_IMAGE_SIZE if image_size is None else int(image_size)
    _check_vit_size(side, name)
    return VisionTransformer(
        image_size=side,
        patch_size=patch,
        num_layers=size.num_layers,
        num_heads=size.num_heads,
        hidden_dim=size.hidden_dim,
        mlp_dim=size.mlp_dim,
        num_classes=int(num_classes),
        in_channels=int(in_channels),
        drop_path=float(drop_path),
    )

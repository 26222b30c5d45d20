"""Per-layer summary: output shapes, parameters and multiply-accumulates.

MACs come from torch's own counter (``torch.utils.flop_counter.FlopCounterMode``, which counts
convolutions and matrix products; FLOPs = 2 x MACs), run on the ``meta`` device so that even ResNet-152
or ViT-L/2 at 224 px is summarised without allocating or computing anything. On ``meta``,
``scaled_dot_product_attention`` runs its reference (math) decomposition, so the counter sees the attention's
two batched matrix products (``Q @ K^T`` and ``weights @ V``) as ``bmm``s; the fused CPU/CUDA kernels would not be
counted. tests/test_vit.py checks ViT-B/16 against torchvision's published 17.56 G.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnet_cli.config import ModelConfig
from resnet_cli.errors import ConfigError
from resnet_cli.models.registry import (
    MIN_IMAGE_SIZE,
    build_model,
    canonical_arch,
    check_image_size,
    default_small_input,
    display_name,
    family_of,
    list_models,
    vit_spec,
)


@dataclass(frozen=True)
class LayerRow:
    """One module of the network."""

    name: str  # dotted path as in the state dict, e.g. "layer1.0.conv1"
    type: str  # class name, e.g. "Conv2d"
    depth: int  # 1 for stages and stem modules, 2 for blocks (ViT: encoder layers), 3 for layers inside blocks
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclass(frozen=True)
class ModelSummary:
    """What ``resnet summary`` shows."""

    model: ModelConfig
    input_shape: tuple[int, ...]
    rows: list[LayerRow] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    total_macs: int = 0
    size_mb: float = 0.0  # parameters and buffers in float32, MB = 10**6 bytes

    def to_dict(self) -> dict:
        return {
            "model": self.model.to_dict(),
            "input_shape": list(self.input_shape),
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "total_macs": self.total_macs,
            "total_flops": 2 * self.total_macs,
            "size_mb": round(self.size_mb, 3),
            "layers": [
                {
                    "name": r.name,
                    "type": r.type,
                    "depth": r.depth,
                    "output_shape": list(r.output_shape),
                    "params": r.params,
                    "macs": r.macs,
                }
                for r in self.rows
            ],
        }


def summarize(config: ModelConfig, image_size: int = 224, depth: int = 2, batch_size: int = 1) -> ModelSummary:
    """Summarise the network ``config`` describes at ``image_size`` x ``image_size``.

    A ViT is built for ``image_size`` (its position embeddings depend on it), which the result's
    ``model.image_size`` records; ResNets take any size from their stem's minimum.

    Args:
        config: the network to describe.
        image_size: input side in pixels.
        depth: deepest module level listed (1: stem and stages, 2: blocks, 3: every layer).
        batch_size: batch dimension of the shapes shown (MACs scale with it).

    Raises:
        ConfigError: bad depth or image size, or an unknown architecture.
    """
    arch = canonical_arch(config.arch)
    vit = family_of(arch) == "vit"
    check_image_size(image_size, config.small_input, arch)
    if depth not in (1, 2, 3):
        raise ConfigError(f"depth must be 1 (stages), 2 (blocks) or 3 (layers), got {depth}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    with torch.device("meta"):
        model = build_model(arch, config.num_classes, config.in_channels, config.small_input, image_size=image_size)
        x = torch.zeros(batch_size, config.in_channels, image_size, image_size)
    model.eval()

    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(_shape_hook(shapes, name)))
    try:
        counts = _flop_counts(model, x)
    finally:
        for h in handles:
            h.remove()
    root = type(model).__name__

    def macs_of(name: str) -> int:
        key = f"{root}.{name}" if name else "Global"
        return int(sum(counts.get(key, {}).values())) // 2

    def depth_of_row(name: str) -> int:
        # A ViT's blocks sit one level deeper (encoder.layers.encoder_layer_i) than a ResNet's (layer1.0):
        # count them as blocks, so --depth means the same for both families.
        return name.count(".") + 1 - int(vit and name.startswith("encoder.layers."))

    rows = [
        LayerRow(
            name=name,
            type=type(module).__name__,
            depth=depth_of_row(name),
            output_shape=shapes.get(name, ()),
            params=sum(p.numel() for p in module.parameters()),
            macs=macs_of(name),
        )
        for name, module in model.named_modules()
        if name and depth_of_row(name) <= depth
    ]
    # Parameters held by the network itself (a ViT's class token) get a row after the stem, so rows add up.
    own = [
        LayerRow(name, "Parameter", 1, tuple(p.shape), p.numel(), 0)
        for name, p in model.named_parameters(recurse=False)
    ]
    rows[1:1] = own
    params = list(model.parameters())
    size_bytes = sum(p.numel() * 4 for p in params) + sum(
        b.numel() * 4 for b in model.buffers() if b.is_floating_point()
    )
    return ModelSummary(
        model=ModelConfig(
            arch, config.num_classes, config.in_channels, config.small_input, image_size if vit else None
        ),
        input_shape=tuple(x.shape),
        rows=rows,
        total_params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        total_macs=macs_of(""),
        size_mb=size_bytes / 1e6,
    )


@dataclass(frozen=True)
class ArchRow:
    """One architecture in ``resnet summary --list``."""

    arch: str  # canonical name, e.g. "vit_s_16"
    display_name: str  # e.g. "ViT-S/16"
    family: str  # "resnet" or "vit"
    params: int | None  # None: the image size does not fit this architecture
    macs: int | None  # per image
    small_input: bool = False  # ResNets: the stem train picks by default at this size
    note: str = ""  # why the size does not fit, when it does not

    @property
    def applicable(self) -> bool:
        return self.params is not None

    def to_dict(self) -> dict:
        return {
            "arch": self.arch,
            "display_name": self.display_name,
            "family": self.family,
            "applicable": self.applicable,
            "params": self.params,
            "macs": self.macs,
            "small_input": self.small_input,
            "note": self.note,
        }


def list_architectures(image_size: int, in_channels: int = 3, num_classes: int = 1000) -> list[ArchRow]:
    """Every architecture's parameters and MACs per image at ``image_size`` px, ResNets first.

    ResNets use the stem ``resnet train`` picks by default (small-input at :data:`SMALL_INPUT_MAX` px or less);
    ViTs are built for ``image_size``. An architecture the size does not fit (below a ResNet stem's minimum, not a
    multiple of a ViT's patch) is listed as not applicable, with the reason.

    Raises:
        ConfigError: a size that is not positive, or an impossible channel or class count.
    """
    if image_size <= 0:
        raise ConfigError(f"image size must be a positive number of pixels, got {image_size}")
    rows = []
    for arch in list_models():
        vit = family_of(arch) == "vit"
        stem_small = default_small_input(arch, image_size)
        try:
            check_image_size(image_size, stem_small, arch)
        except ConfigError:
            if vit:
                note = f"{image_size} px is not a multiple of the patch size {vit_spec(arch)[1]}"
            else:
                note = f"below the {MIN_IMAGE_SIZE[stem_small]} px minimum"
            rows.append(ArchRow(arch, display_name(arch), "vit" if vit else "resnet", None, None, stem_small, note))
            continue
        with torch.device("meta"):
            model = build_model(arch, num_classes, in_channels, stem_small, image_size=image_size)
            x = torch.zeros(1, in_channels, image_size, image_size)
        model.eval()
        macs = int(sum(_flop_counts(model, x).get("Global", {}).values())) // 2
        params = sum(p.numel() for p in model.parameters())
        rows.append(ArchRow(arch, display_name(arch), "vit" if vit else "resnet", params, macs, stem_small))
    return rows


def _flop_counts(model: nn.Module, x: torch.Tensor) -> dict[str, dict[object, int]]:
    """FLOPs of one forward pass, by module path (``"Global"``: the whole network)."""
    counter = FlopCounterMode(display=False, depth=None)  # type: ignore[arg-type]  # None: every depth
    with counter, torch.no_grad():
        model(x)
    return counter.get_flop_counts()


def _shape_hook(shapes: dict[str, tuple[int, ...]], name: str) -> Callable[[nn.Module, object, object], None]:
    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            shapes[name] = tuple(output.shape)

    return hook

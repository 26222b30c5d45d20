"""Per-layer summary: output shapes, parameters and multiply-accumulates.

MACs come from torch's own counter (``torch.utils.flop_counter.FlopCounterMode``, which counts
convolutions and matrix products; FLOPs = 2 x MACs), run on the ``meta`` device so that even ResNet-152
at 224 px is summarised without allocating or computing anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnet_cli.config import ModelConfig
from resnet_cli.errors import ConfigError
from resnet_cli.models.registry import build_model, canonical_arch, check_image_size


@dataclass(frozen=True)
class LayerRow:
    """One module of the network."""

    name: str  # dotted path as in the state dict, e.g. "layer1.0.conv1"
    type: str  # class name, e.g. "Conv2d"
    depth: int  # 1 for stages and stem modules, 2 for blocks, 3 for layers inside blocks
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

    Args:
        config: the network to describe.
        image_size: input side in pixels.
        depth: deepest module level listed (1: stem and stages, 2: blocks, 3: every layer).
        batch_size: batch dimension of the shapes shown (MACs scale with it).

    Raises:
        ConfigError: bad depth or image size, or an unknown architecture.
    """
    arch = canonical_arch(config.arch)
    check_image_size(image_size, config.small_input, arch)
    if depth < 1:
        raise ConfigError(f"depth must be 1 (stages), 2 (blocks) or 3 (layers), got {depth}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    with torch.device("meta"):
        model = build_model(arch, config.num_classes, config.in_channels, config.small_input)
        x = torch.zeros(batch_size, config.in_channels, image_size, image_size)
    model.eval()

    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(_shape_hook(shapes, name)))
    counter = FlopCounterMode(display=False, depth=None)  # type: ignore[arg-type]  # None: every depth
    try:
        with counter, torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    counts = counter.get_flop_counts()
    root = type(model).__name__

    def macs_of(name: str) -> int:
        key = f"{root}.{name}" if name else "Global"
        return int(sum(counts.get(key, {}).values())) // 2

    rows = [
        LayerRow(
            name=name,
            type=type(module).__name__,
            depth=name.count(".") + 1,
            output_shape=shapes.get(name, ()),
            params=sum(p.numel() for p in module.parameters()),
            macs=macs_of(name),
        )
        for name, module in model.named_modules()
        if name and name.count(".") + 1 <= depth
    ]
    params = list(model.parameters())
    size_bytes = sum(p.numel() * 4 for p in params) + sum(
        b.numel() * 4 for b in model.buffers() if b.is_floating_point()
    )
    return ModelSummary(
        model=ModelConfig(arch, config.num_classes, config.in_channels, config.small_input),
        input_shape=tuple(x.shape),
        rows=rows,
        total_params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        total_macs=macs_of(""),
        size_mb=size_bytes / 1e6,
    )


def _shape_hook(shapes: dict[str, tuple[int, ...]], name: str) -> Callable[[nn.Module, object, object], None]:
    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            shapes[name] = tuple(output.shape)

    return hook

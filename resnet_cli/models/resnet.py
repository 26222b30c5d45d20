"""ResNet-18/34/50/101/152, written from scratch in torchvision's grammar.

Module and parameter names follow ``torchvision.models.resnet`` exactly, so state dicts move between this
project, torchvision and timm with ``strict=True`` and no key mapping. The bottleneck puts its stride on the
3x3 convolution (ResNet v1.5), as torchvision and timm do.

References:
    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (arXiv:1512.03385).
    Goyal et al., "Accurate, Large Minibatch SGD", 2017 (arXiv:1706.02677): zero-init of the last BN.
    Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016 (arXiv:1603.09382): ``drop_path``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import StochasticDepth


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding, no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias; also the projection shortcut."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def _drop_path(p: float) -> nn.Module:
    """Stochastic depth on a residual branch: drop it for whole samples at rate ``p`` while training.

    No parameters either way, so the state dict keeps torchvision's keys.
    """
    return StochasticDepth(p, "row") if p > 0 else nn.Identity()


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity or projection shortcut (ResNet-18/34); ``drop_path`` is the
    block's stochastic depth rate.

    Also importable as :data:`ResidualBlock34`, the original project's name for it.
    """

    expansion: int = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: Callable[[int], nn.Module] | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        result: Tensor = self.relu(self.drop_path(out) + identity)
        return result


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, with a shortcut (ResNet-50/101/152);
    ``drop_path`` is the block's stochastic depth rate.

    Also importable as :data:`ResidualLearningBlock`, the original project's name for it.
    """

    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: Callable[[int], nn.Module] | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = norm_layer(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        result: Tensor = self.relu(self.drop_path(out) + identity)
        return result


ResidualBlock34 = BasicBlock
"""Alias of :class:`BasicBlock`: the original project's name for the block of ResNet-18/34, kept importable."""

ResidualLearningBlock = Bottleneck
"""Alias of :class:`Bottleneck`: the original project's name for the ("residual learning") block of ResNet-50
and deeper, kept importable."""


class ResNet(nn.Module):
    """A ResNet for image classification.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage, e.g. ``[3, 4, 6, 3]`` for ResNet-34.
        num_classes: size of the classifier's output.
        in_channels: channels of the input images (1 for greyscale, 3 for RGB).
        small_input: use a 3x3 stride-1 first convolution and no max-pool, for small images (``resnet train``
            turns it on at 64 px or less; the CIFAR-style stem). The parameter names do not change, only the
            first kernel's shape.
        zero_init_residual: start each block's last normalisation layer at zero so every block begins as the identity.
        norm_layer: normalisation factory called with a channel count, ``nn.BatchNorm2d`` by default (as in
            torchvision: e.g. ``lambda c: nn.GroupNorm(32, c)`` for small batches). The command line always
            trains with BatchNorm, which is what checkpoints and exports record.
        drop_path: stochastic depth rate of the last block, rising linearly from 0 at the first (as timm): each
            block's residual branch is dropped for whole samples at its rate while training (torch's global RNG).
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        small_input: bool = False,
        zero_init_residual: bool = False,
        norm_layer: Callable[[int], nn.Module] | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self._norm_layer = norm_layer or nn.BatchNorm2d
        self.inplanes = 64
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        # nn.Identity has no parameters, so the state dict keeps torchvision's keys either way.
        self.maxpool: nn.Module = nn.Identity() if small_input else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        # Stochastic depth rises linearly over all blocks, from 0 at the first to drop_path at the last.
        rates = [drop_path * i / max(sum(layers) - 1, 1) for i in range(sum(layers))]
        stage_rates = [rates[sum(layers[:s]) : sum(layers[: s + 1])] for s in range(4)]
        self.layer1 = self._make_layer(block, 64, layers[0], drop_paths=stage_rates[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, drop_paths=stage_rates[1])
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, drop_paths=stage_rates[2])
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, drop_paths=stage_rates[3])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                last = m.bn3 if isinstance(m, Bottleneck) else m.bn2 if isinstance(m, BasicBlock) else None
                if isinstance(getattr(last, "weight", None), Tensor):
                    nn.init.constant_(last.weight, 0)  # type: ignore[union-attr,arg-type]  # a Tensor, checked above

    def _make_layer(
        self,
        block: type[BasicBlock | Bottleneck],
        planes: int,
        blocks: int,
        stride: int = 1,
        drop_paths: list[float] | None = None,
    ) -> nn.Sequential:
        rates = drop_paths or [0.0] * blocks
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            # Projection shortcut: the residual changes resolution or width.
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                self._norm_layer(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, self._norm_layer, rates[0])]
        self.inplanes = planes * block.expansion
        layers += [
            block(self.inplanes, planes, norm_layer=self._norm_layer, drop_path=rates[i]) for i in range(1, blocks)
        ]
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        """The pooled, flattened features before the classifier."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.fc(self.forward_features(x))
        return logits


def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18: basic blocks ``[2, 2, 2, 2]``; keyword arguments as :class:`ResNet`."""
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34: basic blocks ``[3, 4, 6, 3]``; keyword arguments as :class:`ResNet`."""
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)


def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50: bottleneck blocks ``[3, 4, 6, 3]``; keyword arguments as :class:`ResNet`."""
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)


def resnet101(**kwargs: Any) -> ResNet:
    """ResNet-101: bottleneck blocks ``[3, 4, 23, 3]``; keyword arguments as :class:`ResNet`."""
    return ResNet(Bottleneck, [3, 4, 23, 3], **kwargs)


def resnet152(**kwargs: Any) -> ResNet:
    """ResNet-152: bottleneck blocks ``[3, 8, 36, 3]``; keyword arguments as :class:`ResNet`."""
    return ResNet(Bottleneck, [3, 8, 36, 3], **kwargs)

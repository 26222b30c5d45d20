"""From-scratch ResNets with torchvision's module names, a registry and a layer summary."""

from resnet_cli.models.registry import build_model, canonical_arch, check_image_size, depth_of, list_models
from resnet_cli.models.resnet import (
    BasicBlock,
    Bottleneck,
    ResidualBlock34,
    ResidualLearningBlock,
    ResNet,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
)

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "ResidualBlock34",
    "ResidualLearningBlock",
    "build_model",
    "canonical_arch",
    "check_image_size",
    "depth_of",
    "list_models",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
]

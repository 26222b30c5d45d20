"""From-scratch ResNets and Vision Transformers with torchvision's module names, a registry and a layer summary."""

from resnet_cli.models.registry import (
    build_model,
    canonical_arch,
    check_image_size,
    depth_of,
    display_name,
    family_of,
    list_models,
    run_name,
)
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
from resnet_cli.models.vit import VisionTransformer, resize_pos_embedding

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "ResidualBlock34",
    "ResidualLearningBlock",
    "VisionTransformer",
    "build_model",
    "canonical_arch",
    "check_image_size",
    "depth_of",
    "display_name",
    "family_of",
    "list_models",
    "resize_pos_embedding",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "run_name",
]
